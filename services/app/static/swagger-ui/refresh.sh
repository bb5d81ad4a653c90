#!/bin/sh
# The API docs page (/schema) serves Swagger UI from these files, never from a CDN, so it works
# offline. They are swagger-ui-dist from the npm registry, unchanged. To move to another
# version: `sh services/app/static/swagger-ui/refresh.sh 5.35.0`, then run
# tests/test_openapi.py (the page and each asset are fetched there) and commit the files.
set -eu
version="${1:?usage: refresh.sh VERSION (of swagger-ui-dist)}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "swagger-ui-dist@$version" >/dev/null && tar xzf swagger-ui-dist-*.tgz)
for f in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE; do
    cp "$work/package/$f" "$here/$f"
done
echo "$version" > "$here/VERSION"
echo "swagger-ui-dist $version in $here"
