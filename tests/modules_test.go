package tests

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Caddy's conventions for modules, checked from the source so that a new
// module cannot be forgotten: every module is in the binary's
// list-modules, and every option has the doc comment that caddyserver.com
// renders as its documentation.

// goPackage is the parsed non-test files of one directory.
type goPackage struct {
	dir   string
	files []*ast.File
	// structs are its struct types, by name.
	structs map[string]*ast.StructType
}

// parseModuleSource parses every package under ../caddymodule.
func parseModuleSource(t *testing.T) []*goPackage {
	t.Helper()
	fset := token.NewFileSet()
	byDir := map[string]*goPackage{}
	var dirs []string
	err := filepath.WalkDir("../caddymodule", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		p := byDir[dir]
		if p == nil {
			p = &goPackage{dir: dir, structs: map[string]*ast.StructType{}}
			byDir[dir] = p
			dirs = append(dirs, dir)
		}
		p.files = append(p.files, f)
		for _, decl := range f.Decls {
			if gd, ok := decl.(*ast.GenDecl); ok && gd.Tok == token.TYPE {
				for _, spec := range gd.Specs {
					ts := spec.(*ast.TypeSpec)
					if st, ok := ts.Type.(*ast.StructType); ok {
						p.structs[ts.Name.Name] = st
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(dirs)
	out := make([]*goPackage, 0, len(dirs))
	for _, d := range dirs {
		out = append(out, byDir[d])
	}
	return out
}

// sourceModule is a module as its source declares it.
type sourceModule struct {
	id, typeName string
	pkg          *goPackage
}

// projectModules finds every module the project registers: the types
// passed to caddy.RegisterModule, with the ID their CaddyModule method
// returns.
func projectModules(t *testing.T) []sourceModule {
	t.Helper()
	var mods []sourceModule
	for _, p := range parseModuleSource(t) {
		registered := map[string]bool{}
		ids := map[string]string{}
		for _, f := range p.files {
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || !isSelector(call.Fun, "caddy", "RegisterModule") || len(call.Args) != 1 {
					return true
				}
				if name := typeNameOf(call.Args[0]); name != "" {
					registered[name] = true
				} else {
					t.Errorf("%s: caddy.RegisterModule of %s: give a composite literal (T{}) so that this test finds its type", p.dir, fmt.Sprintf("%T", call.Args[0]))
				}
				return true
			})
			for _, decl := range f.Decls {
				fd, ok := decl.(*ast.FuncDecl)
				if !ok || fd.Name.Name != "CaddyModule" || fd.Recv == nil || len(fd.Recv.List) != 1 {
					continue
				}
				recv := typeNameOf(fd.Recv.List[0].Type)
				id, newType := moduleInfo(fd)
				if id == "" {
					t.Errorf("%s: %s.CaddyModule: no ID string literal found in the caddy.ModuleInfo it returns", p.dir, recv)
					continue
				}
				if newType != recv {
					t.Errorf("%s: module %s: New makes a %q, not a *%s (Caddy decodes the JSON into what New returns)", p.dir, id, newType, recv)
				}
				ids[recv] = id
			}
		}
		for name := range registered {
			id, ok := ids[name]
			if !ok {
				t.Errorf("%s: %s is registered but has no CaddyModule method this test can read", p.dir, name)
				continue
			}
			mods = append(mods, sourceModule{id: id, typeName: name, pkg: p})
		}
	}
	slices.SortFunc(mods, func(a, b sourceModule) int { return strings.Compare(a.id, b.id) })
	return mods
}

// moduleInfo reads the ID and the type New makes from a CaddyModule
// method returning caddy.ModuleInfo{ID: "...", New: func() caddy.Module
// { return new(T) }}.
func moduleInfo(fd *ast.FuncDecl) (id, newType string) {
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		kv, ok := n.(*ast.KeyValueExpr)
		if !ok {
			return true
		}
		key, _ := kv.Key.(*ast.Ident)
		switch {
		case key == nil:
		case key.Name == "ID":
			if lit, ok := kv.Value.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				id, _ = strconv.Unquote(lit.Value)
			}
		case key.Name == "New":
			ast.Inspect(kv.Value, func(n ast.Node) bool {
				ret, ok := n.(*ast.ReturnStmt)
				if !ok || len(ret.Results) != 1 {
					return true
				}
				switch r := ret.Results[0].(type) {
				case *ast.CallExpr: // new(T)
					if fn, ok := r.Fun.(*ast.Ident); ok && fn.Name == "new" && len(r.Args) == 1 {
						newType = typeNameOf(r.Args[0])
					}
				case *ast.UnaryExpr: // &T{}
					if r.Op == token.AND {
						newType = typeNameOf(r.X)
					}
				}
				return false
			})
		}
		return true
	})
	return id, newType
}

// typeNameOf is the name of the package-local type of T, *T, T{} or &T{}.
func typeNameOf(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.StarExpr:
		return typeNameOf(e.X)
	case *ast.CompositeLit:
		return typeNameOf(e.Type)
	case *ast.UnaryExpr:
		return typeNameOf(e.X)
	case *ast.ParenExpr:
		return typeNameOf(e.X)
	}
	return ""
}

func isSelector(e ast.Expr, pkg, name string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != name {
		return false
	}
	x, ok := sel.X.(*ast.Ident)
	return ok && x.Name == pkg
}

func TestEveryModuleIsListed(t *testing.T) {
	t.Parallel()
	mods := projectModules(t)
	// What the project had when this test was written: the source
	// reading must find at least these.
	for _, id := range []string{"wechat", "http.handlers.wechat_token", "http.handlers.wechat_token_value", "http.handlers.wechat_jssdk",
		"http.handlers.wechat_component_events", "http.handlers.wechat_messages", "admin.api.wechat_token"} {
		if !slices.ContainsFunc(mods, func(m sourceModule) bool { return m.id == id }) {
			t.Errorf("the source reading did not find module %s", id)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBin, "list-modules")
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+filepath.Join(home, "data"), "XDG_CONFIG_HOME="+filepath.Join(home, "config"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("caddy list-modules: %v\n%s", err, out)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		listed[strings.TrimSpace(line)] = true
	}
	for _, m := range mods {
		if !listed[m.id] {
			t.Errorf("caddy list-modules does not list %s (type %s in %s)", m.id, m.typeName, m.pkg.dir)
		}
	}
}

func TestEveryModuleOptionIsDocumented(t *testing.T) {
	t.Parallel()
	// Each undocumented field once, with the modules whose JSON has it.
	undocumented := map[string][]string{}
	var order []string
	options := 0
	for _, m := range projectModules(t) {
		seen := map[string]bool{}
		var check func(typeName string)
		check = func(typeName string) {
			st, ok := m.pkg.structs[typeName]
			if !ok || seen[typeName] {
				return
			}
			seen[typeName] = true
			for _, field := range st.Fields.List {
				tag := jsonName(field)
				if len(field.Names) == 0 {
					// Embedded: its fields are the module's own options.
					for _, inner := range localTypes(field.Type) {
						check(inner)
					}
					continue
				}
				if tag == "" || !field.Names[0].IsExported() {
					continue // not in the JSON
				}
				// The structs an option holds (pointed to, in slices or
				// maps) are documented the same way.
				for _, inner := range localTypes(field.Type) {
					check(inner)
				}
				for _, name := range field.Names {
					options++
					if field.Doc != nil && strings.TrimSpace(field.Doc.Text()) != "" {
						continue
					}
					key := fmt.Sprintf("%s.%s (json %s)", typeName, name.Name, tag)
					if undocumented[key] == nil {
						order = append(order, key)
					}
					undocumented[key] = append(undocumented[key], m.id)
				}
			}
		}
		check(m.typeName)
	}
	if options < 20 {
		t.Errorf("only %d options found: is the source reading broken?", options)
	}
	for _, key := range order {
		t.Errorf("no doc comment above %s, an option of %s: caddyserver.com's module docs show the field's comment as its documentation",
			key, strings.Join(undocumented[key], ", "))
	}
}

// jsonName is the JSON name of a field with a json tag, or "".
func jsonName(f *ast.Field) string {
	if f.Tag == nil {
		return ""
	}
	tag, err := strconv.Unquote(f.Tag.Value)
	if err != nil {
		return ""
	}
	value, ok := reflect.StructTag(tag).Lookup("json")
	name, _, _ := strings.Cut(value, ",")
	switch {
	case !ok || name == "-":
		return ""
	case name == "":
		return "named as the field"
	}
	return name
}

// localTypes are the package-local type names in a field's type.
func localTypes(e ast.Expr) []string {
	switch e := e.(type) {
	case *ast.Ident:
		return []string{e.Name}
	case *ast.StarExpr:
		return localTypes(e.X)
	case *ast.ArrayType:
		return localTypes(e.Elt)
	case *ast.MapType:
		return append(localTypes(e.Key), localTypes(e.Value)...)
	}
	return nil
}
