package database_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// allowedBegins are the transactions begun outside internal/platform/database, by
// file and function: the legacy version copy runs goose's own store,
// which takes a database/sql transaction; the bench's raw ceiling sends
// the api's statements straight through pgx, to measure what the api adds.
var allowedBegins = map[string]bool{
	"internal/ops/migrate/migrate.go copyLegacy": true,
	"cmd/bench/b1.go lockAndRead":                true,
}

// No code outside this package (and tests) begins a transaction itself:
// every transaction is a Tx that InTx began, whose AfterCommit works.
// Scanned: calls of Begin, BeginTx, BeginFunc and BeginTxFunc, and SQL
// literals that begin one.
func TestNoTransactionBegunOutsideDatabase(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	var found []string
	scanned := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel == filepath.Join("internal", "platform", "database") || strings.HasPrefix(d.Name(), ".") || d.Name() == "tools" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		scanned++
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok {
				continue
			}
			where := filepath.ToSlash(rel) + " " + fn.Name.Name
			ast.Inspect(fn, func(n ast.Node) bool {
				if begins(n) && !allowedBegins[where] {
					found = append(found, where)
				}
				return true
			})
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, scanned, 50, "the scan found the code")
	require.Empty(t, found, "transactions begun outside database.InTx")
}

// begins reports a call that begins a transaction, or SQL that does.
func begins(n ast.Node) bool {
	switch n := n.(type) {
	case *ast.CallExpr:
		if sel, ok := n.Fun.(*ast.SelectorExpr); ok {
			switch sel.Sel.Name {
			case "Begin", "BeginTx", "BeginFunc", "BeginTxFunc":
				return true
			}
		}
	case *ast.BasicLit:
		if s, err := strconv.Unquote(n.Value); err == nil && n.Kind == token.STRING {
			s = strings.ToUpper(strings.TrimSpace(s))
			return s == "BEGIN" || strings.HasPrefix(s, "BEGIN ") || strings.HasPrefix(s, "START TRANSACTION")
		}
	}
	return false
}

func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, dir, parent, "no go.mod above the test")
		dir = parent
	}
}
