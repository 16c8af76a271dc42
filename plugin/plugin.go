// Package plugin is the one registry pattern of the project: a name → value
// table that packages fill from their init functions (URI schemes and their
// openers, multipathing plugins, SATPs, PSPs), like database/sql.Register.
// Registering nil or a name twice is a programming error and panics; looking
// up an unknown name is the user's error and says which names are known. It
// is a leaf: it imports nothing of this module.
package plugin

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
)

// Registry maps names to values of one kind of plugin; it is safe for
// concurrent use. Its zero value is not usable: make one with New.
type Registry[T any] struct {
	kind string
	mu   sync.Mutex
	m    map[string]T
}

// New returns an empty registry; kind names the plugins in messages
// ("PSP", "multipathing plugin", "scheme").
func New[T any](kind string) *Registry[T] {
	return &Registry[T]{kind: kind, m: map[string]T{}}
}

// Register adds v under name. It panics if v is nil or name is taken.
func (r *Registry[T]) Register(name string, v T) {
	if isNil(v) {
		panic(fmt.Sprintf("plugin: %s %q registered as nil", r.kind, name))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.m[name]; dup {
		panic(fmt.Sprintf("plugin: %s %q registered twice", r.kind, name))
	}
	r.m[name] = v
}

// Get returns the value registered under name.
func (r *Registry[T]) Get(name string) (T, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.m[name]
	return v, ok
}

// Lookup is Get with an error that names the known plugins.
func (r *Registry[T]) Lookup(name string) (T, error) {
	v, ok := r.Get(name)
	if !ok {
		return v, fmt.Errorf("unknown %s %q (known: %s)", r.kind, name, strings.Join(r.Names(), ", "))
	}
	return v, nil
}

// Names lists the registered names, sorted.
func (r *Registry[T]) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.m))
	for n := range r.m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Values lists the registered values in the order of their names.
func (r *Registry[T]) Values() []T {
	names := r.Names()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]T, 0, len(names))
	for _, n := range names {
		out = append(out, r.m[n])
	}
	return out
}

func isNil[T any](v T) bool {
	rv := reflect.ValueOf(&v).Elem()
	switch rv.Kind() {
	case reflect.Func, reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Chan:
		return rv.IsNil()
	}
	return false
}
