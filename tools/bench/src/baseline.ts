import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LoadBatch } from '@tally/loadgen';
import { REPO_ROOT } from '@tally/testing';
import { editedRules } from './workload';

/** Another commit's checkout, runnable next to this one: `--baseline <ref>`. */
export type Baseline = ReturnType<typeof checkoutBaseline>;

const git = (...args: string[]) => execFileSync('git', args, { cwd: REPO_ROOT, encoding: 'utf8' }).trim();

/**
 * Checks `ref` out into a temporary git worktree (detached) whose apps run on this checkout's installed packages:
 * its node_modules links to this one's, except the workspace packages (@tally/*), which point into the worktree, so
 * the apps run the other commit's code end to end. A commit whose package-lock.json differs from this checkout's
 * gets its own packages instead (`npm ci --ignore-scripts` in the worktree), so it runs on the dependencies it
 * declared, plus links to the packages only this checkout has (for the bench's own code). Returns the full commit id,
 * its subject line and the worktree's `root` (pass it as `root` to startFleet).
 */
export function checkoutBaseline(ref: string) {
  const commit = git('rev-parse', '--verify', `${ref}^{commit}`);
  const subject = git('log', '-1', '--format=%s', commit);
  const root = mkdtempSync(join(tmpdir(), 'tally-baseline-'));
  git('worktree', 'add', '--detach', root, commit);
  const [modules, theirs] = [join(REPO_ROOT, 'node_modules'), join(root, 'node_modules')];
  if (readFileSync(join(root, 'package-lock.json'), 'utf8') !== readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) {
    console.log(`baseline ${ref}: its package-lock.json differs from this checkout's; npm ci in ${root}`);
    execFileSync('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit' });
  } else {
    // Workspace links are relative (../../libs/x): the same links inside the worktree reach its own sources.
    mkdirSync(join(theirs, '@tally'), { recursive: true });
    for (const pkg of readdirSync(join(modules, '@tally')))
      symlinkSync(readlinkSync(join(modules, '@tally', pkg)), join(theirs, '@tally', pkg));
    for (const group of ['apps', 'libs', 'tools']) {
      for (const pkg of readdirSync(join(REPO_ROOT, group))) {
        const own = join(REPO_ROOT, group, pkg, 'node_modules');
        if (existsSync(own) && existsSync(join(root, group, pkg))) symlinkSync(own, join(root, group, pkg, 'node_modules'));
      }
    }
  }
  // This checkout's packages that the worktree lacks, for its apps and for this checkout's measuring code run there.
  linkMissing(modules, theirs);
  const remove = () => {
    try {
      git('worktree', 'remove', '--force', root);
    } finally {
      rmSync(root, { recursive: true, force: true });
      git('worktree', 'prune');
    }
  };
  return { ref, commit, subject, root, remove };
}

function linkMissing(from: string, to: string): void {
  for (const entry of readdirSync(from)) {
    if (entry === '@tally') continue;
    if (!existsSync(join(to, entry))) symlinkSync(join(from, entry), join(to, entry));
    else if (entry.startsWith('@')) linkMissing(join(from, entry), join(to, entry));
  }
}

/**
 * The rules as 40027f0 takes them (its rules schema refuses what came later): default rules without the unique
 * visitors' sketches (`distinct`), the page rows and the path format of `page`, which stays an id dimension.
 */
export const BASELINE_RULES = editedRules((r) => {
  delete r.metrics['PageViews'];
  delete r.metrics['UniqueVisitors'];
  delete r.entities['page'];
  for (const e of Object.values(r.entities)) delete e['distinct'];
  delete r.dimensions;
  for (const e of Object.values(r.events)) e.counters = e.counters.filter((c) => c.entity !== 'page');
});

/** A batch with page paths as ids (`/pages/3` -> `_pages_3`), for BASELINE_RULES. */
export function idPages(b: LoadBatch): LoadBatch {
  const events = b.events.map((e) => {
    const page = (e.dims as Record<string, string> | undefined)?.['page'];
    return page === undefined ? e : { ...e, dims: { ...e.dims, page: page.replaceAll('/', '_') } };
  });
  return { ...b, events };
}
