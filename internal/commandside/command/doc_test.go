package command_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// stepLine is a place the package doc's walk through names: a file of the
// repository and a function or Type.Method in it.
var stepLine = regexp.MustCompile(`(?m)^//\t(\S+\.go)\s+(\S+)$`)

// Every file and function the walk through one command names exists, so
// the walk stays true as the code moves.
func TestTheWalkThroughNamesWhatExists(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("doc.go")
	require.NoError(t, err)
	root := filepath.Join("..", "..", "..")
	steps := stepLine.FindAllStringSubmatch(string(doc), -1)
	require.GreaterOrEqual(t, len(steps), 30, "the walk names its places")
	for _, step := range steps {
		path, name := step[1], step[2]
		file, err := parser.ParseFile(token.NewFileSet(), filepath.Join(root, path), nil, parser.SkipObjectResolution)
		require.NoError(t, err, "the walk names %s", path)
		require.True(t, declares(file, name), "%s declares no %s", path, name)
	}
}

// declares says whether file declares the function name, or the method
// name written Type.Method.
func declares(file *ast.File, name string) bool {
	recv, fn, isMethod := strings.Cut(name, ".")
	if !isMethod {
		recv, fn = "", name
	}
	for _, d := range file.Decls {
		f, ok := d.(*ast.FuncDecl)
		if !ok || f.Name.Name != fn {
			continue
		}
		if f.Recv == nil {
			if recv == "" {
				return true
			}
			continue
		}
		typ := f.Recv.List[0].Type
		if star, ok := typ.(*ast.StarExpr); ok {
			typ = star.X
		}
		if id, ok := typ.(*ast.Ident); ok && id.Name == recv {
			return true
		}
	}
	return false
}
