/** `npx tsx tools/stack/src/readme-env.main.ts --write` regenerates the README's environment tables; without `--write` it prints them. */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from './config';
import { renderEnvSection, withEnvSection } from './readme-env';

const readmePath = path.join(repoRoot, 'README.md');
if (process.argv.includes('--write')) {
  writeFileSync(readmePath, withEnvSection(readFileSync(readmePath, 'utf8')));
  process.stdout.write(`updated the environment tables in ${readmePath}\n`);
} else {
  process.stdout.write(renderEnvSection() + '\n');
}
