#!/usr/bin/env bash
# Creates an empty workspace project: tools/scaffold/new-project.sh libs|apps|tools NAME "tag,tag"
set -euo pipefail
kind=$1 name=$2 tags=${3:-}
dir="$kind/$name"
mkdir -p "$dir/src"
tagjson=$(printf '%s' "$tags" | awk -F, '{for(i=1;i<=NF;i++){printf "%s\"%s\"", (i>1?", ":""), $i}}')
cat > "$dir/package.json" <<JSON
{
  "name": "@tally/$name",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "exports": { ".": "./src/index.ts" },
  "nx": { "tags": [$tagjson] }
}
JSON
cat > "$dir/vitest.config.ts" <<'TS'
import { defineProject, mergeConfig } from 'vitest/config';
import { shared } from '../../vitest.shared.ts';

export default mergeConfig(shared, defineProject({ test: { name: NAME } }));
TS
sed -i "s/NAME/'$name'/" "$dir/vitest.config.ts"
cat > "$dir/tsconfig.json" <<'JSON'
{
  "extends": "../../tsconfig.base.json",
  "include": ["src/**/*.ts"],
  "references": []
}
JSON
[ -f "$dir/src/index.ts" ] || echo "export {};" > "$dir/src/index.ts"
