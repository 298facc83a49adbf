package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// rawQuery is a query of queries/*.sql turned into literal SQL with $n
// placeholders: the raw ceilings replay exactly the statements the
// application sends, read from the same files sqlc generates from, so they
// cannot drift apart.
type rawQuery struct {
	name   string
	sql    string
	params []string // @names in placeholder order
}

var paramRe = regexp.MustCompile(`@([a-z_][a-z0-9_]*)`)

// loadQueries reads every named query of the module's queries/ directory.
func loadQueries(root string) (map[string]*rawQuery, error) {
	files, err := filepath.Glob(filepath.Join(root, "queries", "*.sql"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no queries/*.sql under %s: %v", root, err)
	}
	out := map[string]*rawQuery{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var cur *rawQuery
		var body []string
		flush := func() {
			if cur != nil {
				cur.sql, cur.params = placeholders(strings.TrimSuffix(strings.TrimSpace(strings.Join(body, "\n")), ";"))
				out[cur.name] = cur
			}
		}
		for _, line := range strings.Split(string(b), "\n") {
			trimmed := strings.TrimSpace(line)
			if rest, ok := strings.CutPrefix(trimmed, "-- name:"); ok {
				flush()
				cur, body = &rawQuery{name: strings.Fields(rest)[0]}, nil
				continue
			}
			if strings.HasPrefix(trimmed, "--") || cur == nil {
				continue
			}
			body = append(body, line)
		}
		flush()
	}
	return out, nil
}

// placeholders numbers each distinct @name by first appearance.
func placeholders(sql string) (string, []string) {
	var params []string
	index := map[string]int{}
	out := paramRe.ReplaceAllStringFunc(sql, func(m string) string {
		name := m[1:]
		if _, ok := index[name]; !ok {
			params = append(params, name)
			index[name] = len(params)
		}
		return fmt.Sprintf("$%d", index[name])
	})
	return out, params
}

// args orders named arguments as the placeholders want them.
func (q *rawQuery) args(named map[string]any) []any {
	out := make([]any, len(q.params))
	for i, p := range q.params {
		v, ok := named[p]
		if !ok {
			panic(fmt.Sprintf("query %s: no argument %s", q.name, p))
		}
		out[i] = v
	}
	return out
}
