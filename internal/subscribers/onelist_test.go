package subscribers_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/subscribers"
)

// notLists are files allowed to name several subscribers together, and why.
var notLists = map[string]string{
	// The registry itself.
	"internal/subscribers/subscribers.go": "the one list",
	// docker-compose.yml names its services (and their ports) by hand; the
	// test holds that description to check the file against it.
	"internal/systemtest/deploy/compose_test.go": "the compose file's services",
}

// names maps each movable subscriber's name to its package's import path.
func names(t *testing.T) map[string]string {
	t.Helper()
	byName := map[string]string{}
	for _, s := range subscribers.Movable() {
		byName[s.Name()] = reflect.TypeOf(s).PkgPath()
	}
	require.GreaterOrEqual(t, len(byName), 2, "the check needs two subscribers to find a list of them")
	return byName
}

// listsOfSubscribers returns the positions in one Go file of the lists that
// name two or more subscribers: a slice, array or map literal, or an
// append, whose elements name different subscribers, by name (a string
// literal equal to it) or through their package (storage.Name,
// storage.Subscriber{}). A queue name such as "catacloud.billing", a call
// such as broker.QueueName(billing.Name) or a struct whose fields name
// different subscribers is no list.
func listsOfSubscribers(fset *token.FileSet, file *ast.File, byName map[string]string) []string {
	imports := map[string]string{} // local name -> import path
	for _, imp := range file.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		local := path[strings.LastIndex(path, "/")+1:]
		if imp.Name != nil {
			local = imp.Name.Name
		}
		imports[local] = path
	}
	byPath := map[string]string{}
	for name, path := range byName {
		byPath[path] = name
	}
	// mentions is the set of subscribers an expression names anywhere in it.
	mentions := func(n ast.Node, into map[string]bool) {
		ast.Inspect(n, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BasicLit:
				if n.Kind == token.STRING {
					if v, err := strconv.Unquote(n.Value); err == nil {
						if _, ok := byName[v]; ok {
							into[v] = true
						}
					}
				}
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && x.Obj == nil {
					if name, ok := byPath[imports[x.Name]]; ok {
						into[name] = true
					}
				}
			}
			return true
		})
	}
	var found []string
	check := func(at ast.Node, items []ast.Expr) {
		named := map[string]bool{}
		for _, item := range items {
			if kv, ok := item.(*ast.KeyValueExpr); ok {
				mentions(kv.Key, named)
				mentions(kv.Value, named)
				continue
			}
			mentions(item, named)
		}
		if len(named) >= 2 {
			found = append(found, fset.Position(at.Pos()).String())
		}
	}
	ast.Inspect(file, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CompositeLit:
			switch n.Type.(type) {
			case *ast.ArrayType, *ast.MapType:
				check(n, n.Elts)
			}
		case *ast.CallExpr:
			if fn, ok := n.Fun.(*ast.Ident); ok && fn.Name == "append" && len(n.Args) > 1 {
				check(n, n.Args[1:])
			}
		}
		return true
	})
	return found
}

// The subscribers are listed once, in this package: a list of them written
// anywhere else would be one more place to change when one is added.
func TestSubscribersAreListedOnce(t *testing.T) {
	t.Parallel()
	byName := names(t)
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	var lists []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && rel != "." || rel == "internal/platform/dbsqlc" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || notLists[rel] != "" {
			return nil
		}
		file, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		lists = append(lists, listsOfSubscribers(fset, file, byName)...)
		return nil
	})
	require.NoError(t, err)
	require.Empty(t, lists, "these list subscribers by hand; read internal/subscribers instead")
}

// The check finds a list however it is written, and only a list.
func TestTheListCheckFindsListsOnly(t *testing.T) {
	t.Parallel()
	byName := names(t)
	var a, b string
	for name := range byName {
		if a == "" {
			a = name
		} else if b == "" {
			b = name
		}
	}
	pa, pb := byName[a], byName[b]
	header := "package p\nimport (\n\t" + strconv.Quote(pa) + "\n\tother " + strconv.Quote(pb) + "\n\t\"github.com/catacloud/epoch/internal/delivery/broker\"\n)\n"
	pkgA := pa[strings.LastIndex(pa, "/")+1:]
	for _, c := range []struct {
		src  string
		list bool
	}{
		{"var x = []any{" + pkgA + ".Subscriber{}, other.Subscriber{}}", true},
		{"var x = []string{" + pkgA + ".Name, other.Name}", true},
		{"var x = []string{" + strconv.Quote(a) + ", " + strconv.Quote(b) + "}", true},
		{"var x = map[string]string{" + pkgA + ".Name: other.Name}", true},
		{"var x = []struct{ n string }{{" + pkgA + ".Name}, {" + strconv.Quote(b) + "}}", true},
		{"var x = append([]string{}, " + pkgA + ".Name, other.Name)", true},
		{"var x = []string{broker.QueueName(" + pkgA + ".Name), broker.QueueName(other.Name)}", true},
		{"var x = []string{" + pkgA + ".Name}", false},
		{"var x = []string{\"catacloud." + a + "\", \"catacloud." + b + "\"}", false},
		{"var x = broker.Subscription{Name: " + pkgA + ".Name, EventTypes: other.Subscriber{}.EventTypes()}", false},
		{"var x = []string{broker.QueueName(" + pkgA + ".Name), broker.Unsubscribed}", false},
		{"func f() { _ = broker.QueueName(" + pkgA + ".Name); _ = broker.QueueName(other.Name) }", false},
	} {
		fset := token.NewFileSet()
		file, err := parser.ParseFile(fset, "x.go", header+c.src+"\n", parser.SkipObjectResolution)
		require.NoError(t, err, c.src)
		got := listsOfSubscribers(fset, file, byName)
		require.Equal(t, c.list, len(got) > 0, "%s: found %v", c.src, got)
	}
	require.True(t, slices.Contains(subscribers.Roles(), subscribers.RoleRelay))
}
