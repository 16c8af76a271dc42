// Package lint holds repository-wide checks that go vet and gofmt do not
// make. It has no code of its own: the checks are tests (lint_test.go), run
// by `go test ./internal/lint` and so by `make test-unit` and `make lint`.
//
//   - Every package has a package doc comment (go list's Doc field).
//   - Imports follow the layers of docs/design.md: lower layers never import
//     higher ones. The rules are a table in lint_test.go; an import that
//     breaks one today and is known is listed there as a named exception,
//     to be removed, and the test fails once an exception is not needed any
//     more, so the list only shrinks.
//   - No tracked file refers to a place outside the repository (a sibling
//     directory of the checkout, a machine's own directories) or to an
//     issue tracker's numbers in prose: the repository stands alone, and
//     an issue number means nothing to a reader of a copy of it.
package lint
