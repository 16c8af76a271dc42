#!/usr/bin/env bash
# fuzz.sh runs every fuzz target of the module, one after the other, each for
# FUZZTIME (default 20s). The list is not written down anywhere: the packages
# are those whose _test.go files declare a `func Fuzz...`, and the targets are
# what `go test -list` reports for them, so a new target is fuzzed without
# anyone having to add it here. A crash leaves its input under the package's
# testdata/fuzz/ (commit it: it becomes a regression test) and fails the run.
#
# Usage: tools/fuzz.sh [PACKAGE...]   (default: the whole module)
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-20s}

if [ $# -gt 0 ]; then
	pkgs=("$@")
else
	mapfile -t dirs < <(grep -rlE '^func Fuzz[A-Za-z0-9_]*\(' --include='*_test.go' . | xargs -r -n1 dirname | sort -u)
	pkgs=("${dirs[@]}")
fi
if [ ${#pkgs[@]} -eq 0 ]; then
	echo "fuzz: no fuzz targets in the module" >&2
	exit 1
fi

total=0
failed=()
for pkg in "${pkgs[@]}"; do
	list=$("$GO" test -list '^Fuzz' "$pkg")
	mapfile -t targets < <(grep -E '^Fuzz' <<<"$list" || true)
	if [ ${#targets[@]} -eq 0 ]; then
		echo "fuzz: $pkg declares a fuzz function but go test -list finds none" >&2
		failed+=("$pkg (no targets listed)")
	fi
	for t in "${targets[@]}"; do
		total=$((total + 1))
		echo "=== fuzz $pkg $t ($FUZZTIME)"
		if ! "$GO" test -run '^$' -fuzz "^${t}\$" -fuzztime "$FUZZTIME" "$pkg"; then
			failed+=("$pkg $t")
		fi
	done
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: ${#failed[@]} of $total targets failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: all $total targets ran for $FUZZTIME without a failure"
