import { describe, expect, it } from 'vitest';
import { renderSvg } from '../charts';
import type { Figure, FigureContext, FigureResult } from '../figure';
import { drainFigure } from './drain';
import { durabilityFigure } from './durability';
import { freshnessFigure } from './freshness';
import { checkoutBaseline } from '../baseline';
import { ingestE2eFigure } from './ingest-e2e';
import { postgresPeerFigure } from './postgres-peer';

// The quick variant of each figure that drives a whole fleet (a few seconds of load each): proves that the figure
// runs end to end and reports numbers, not how fast anything is (no thresholds: the machine is shared).

async function runQuick(figure: Figure, extra: Partial<FigureContext> = {}): Promise<{ result: FigureResult; lines: string[] }> {
  const lines: string[] = [];
  const result = await figure.run({ quick: true, log: (l) => lines.push(l), ...extra });
  expect(result.summary).toMatch(/\[quick run\]$/);
  expect(result.markdown).toContain('(quick run)');
  for (const chart of result.charts ?? []) expect(await renderSvg(chart.spec)).toMatch(/^<svg[^>]*>[\s\S]*<\/svg>$/);
  return { result, lines };
}

/** The cells of the markdown table row that starts with `first`. */
function row(markdown: string, first: string): string[] {
  const line = markdown.split('\n').find((l) => l.startsWith(`| ${first} |`));
  expect(line, `a table row starting with ${first}`).toBeDefined();
  return line!
    .split('|')
    .slice(1, -1)
    .map((c) => c.trim());
}

const num = (cell: string) => Number(cell.replace(/[*,x%]/g, ''));

describe('fleet figures (quick)', () => {
  it('ingest-e2e measures both batch sizes, the HINCRBY ceiling and the naive design', async () => {
    const { result } = await runQuick(ingestE2eFigure);
    expect(result.summary).toMatch(
      /^[\d,]+ events\/s end to end with 1000-event batches, [\d,]+ with 100-event batches .* naive design's [\d,]+ events\/s .* HINCRBY ceiling [\d,]+\/s/,
    );
    for (const batch of ['100', '1000']) {
      const cells = row(result.markdown, batch);
      expect(num(cells[3]!)).toBeGreaterThan(0); // events/s end to end
      expect(num(cells[4]!)).toBeGreaterThan(0); // accepted/s
    }
    expect(result.charts?.map((c) => c.name)).toEqual(['throughput', 'timeline']);
  }, 120_000);

  it('freshness times probes from 202 to visible under load', async () => {
    const { result } = await runQuick(freshnessFigure);
    expect(result.summary).toMatch(
      /^202 -> visible in the query API: p50 [\d.,]+ ms, p99 [\d.,]+ ms, max [\d.,]+ ms over 15 probes under [\d,]+ events\/s/,
    );
    const cells = row(result.markdown, '15');
    expect(
      cells
        .slice(1, 5)
        .map(num)
        .every((v) => Number.isFinite(v) && v > 0),
    ).toBe(true); // p50, p90, p99, max
    expect(result.charts?.map((c) => c.name)).toEqual(['cdf']);
  }, 120_000);

  it('drain counts UpdateItems, items touched and the time to drain after an outage', async () => {
    const { result, lines } = await runQuick(drainFigure);
    expect(result.summary).toMatch(
      /^after a [\d.]+ s DynamoDB outage under 100 events\/s \(\d+ one-second buckets unwritten\): [\d,]+ UpdateItems for [\d,]+ items touched/,
    );
    const value = (label: string) =>
      num(
        result.markdown
          .split('\n')
          .find((l) => l.startsWith(`| ${label}`))!
          .split('|')[2]!
          .trim()
          .split(' ')[0]!,
      );
    expect(value('**items touched**')).toBeGreaterThan(0);
    expect(value('**UpdateItems** (ok)')).toBeGreaterThan(0);
    expect(value('**time to drain**')).toBeGreaterThan(0);
    expect(lines).toContain('starting dynalite again');
    expect(result.charts?.map((c) => c.name)).toEqual(['timeline']);
  }, 120_000);

  it("ingest-e2e --baseline runs the other commit's fleet from a worktree, alternated with this one, and reports both", async () => {
    const baseline = checkoutBaseline('HEAD');
    try {
      const { result, lines } = await runQuick(ingestE2eFigure, { baseline });
      expect(lines).toContain(`before/after round 2: HEAD`);
      expect(result.summary).toMatch(
        /against HEAD \([0-9a-f]{10}\) in the same run: CPU per 1000 events x[\d.]+, events\/s x[\d.]+ \(on its rules, [\d.]+% of the HINCRBY ceiling\)/,
      );
      expect(result.markdown).toMatch(/On these rules this checkout takes [\d,]+ events\/s: [\d.]+% of the HINCRBY ceiling above\./);
      for (const name of ['HEAD, round 1', 'this checkout, round 1', 'HEAD, round 2', 'this checkout, round 2']) {
        const cells = row(result.markdown, name);
        expect(num(cells[1]!)).toBeGreaterThan(0); // events/s
        expect(num(cells[2]!)).toBeGreaterThan(0); // CPU ms per 1000 events
      }
    } finally {
      baseline.remove();
    }
  }, 240_000);

  it('postgres-peer writes the same traffic into PostgreSQL at both durabilities, exactly, next to Tally', async () => {
    const { result, lines } = await runQuick(postgresPeerFigure);
    // The figure compares each PostgreSQL table with the sums of every batch it applied and fails on any difference.
    expect(lines.filter((l) => /checked: [\d,]+ \(pk, field\) rows equal the sums of [\d,]+ batches/.test(l))).toHaveLength(4);
    // The writer that keeps unique visitors too checks each (pk, field)'s count of members as well.
    expect(
      lines.filter((l) =>
        /checked: [\d,]+ \(pk, field\) rows equal the sums, and [\d,]+ members their distinct members, of [\d,]+ batches/.test(l),
      ),
    ).toHaveLength(2);
    expect(result.summary).toMatch(
      /^sync off \(AOF everysec \/ synchronous_commit=off\): Tally HTTP, one redis-server [\d,]+ events\/s.*; Tally @tally\/client, 3-master Redis Cluster [\d,]+ events\/s.*PostgreSQL [\d,]+ events\/s.*; sync on \(AOF always \/ synchronous_commit=on\)/,
    );
    for (const first of [
      'Tally, HTTP, one redis-server, AOF `appendfsync everysec`',
      'Tally, @tally/client, 3-master Redis Cluster, AOF `appendfsync everysec`',
      'PostgreSQL, `synchronous_commit = off`',
      'Tally, HTTP, one redis-server, AOF `appendfsync always`',
      'Tally, @tally/client, 3-master Redis Cluster, AOF `appendfsync always`',
      'Tally, @tally/client, 3-master Redis Cluster, default rules (+ unique visitors, rankings), AOF `appendfsync always`',
      'PostgreSQL, `synchronous_commit = on`',
      'PostgreSQL with a members table (exact unique visitors), `synchronous_commit = on`',
    ]) {
      const cells = row(result.markdown, first);
      expect(num(cells[2]!)).toBeGreaterThan(0); // events/s
      expect(Number(cells[3]!.split(' ')[0])).toBeGreaterThan(0); // CPU ms per 1000 events
    }
    expect(row(result.markdown, 'PostgreSQL, `synchronous_commit = on`')[5]).toMatch(/rows equal the expected sums/);
    // In the peer's shape the producer's CPU counts against Tally, and the probes go through the client.
    const client = row(result.markdown, 'Tally, @tally/client, 3-master Redis Cluster, AOF `appendfsync everysec`');
    expect(client[3]).toMatch(/\(producer [\d.]+, collector [\d.]+, aggregator [\d.]+, redis [\d.]+\)/);
    expect(client[4]).toMatch(/enqueued → visible in the query API/);
  }, 300_000);

  it('durability SIGKILLs Redis after an answered write under each policy, and runs a fleet of each and one with a replica', async () => {
    const { result } = await runQuick(durabilityFigure);
    // Under always Redis has fsynced a write before it answers it: no SIGKILL can take it back.
    expect(row(result.markdown, 'always')[3]).toBe('**0**');
    expect(result.summary).toMatch(
      /^SIGKILL right after an answered write: everysec lost it in [01] of 1 rounds, always in 0; always \/ everysec events\/s ×[\d.]+ with 1000-event batches, ×[\d.]+ with 100-event batches .*; a replica on the same cores \/ always ×[\d.]+, ×[\d.]+; the replica waited for \(REDIS_WAIT_REPLICAS=1\) \/ not ×[\d.]+, ×[\d.]+; freshness p99 ([\d.,]+ \/ ){3}[\d.,]+ ms, 202 p99 ([\d.,]+ \/ ){3}[\d.,]+ ms \(everysec \/ always \/ a replica \/ waited for\) \[quick run\]$/,
    );
    for (const compared of ['always / everysec', 'a replica / always', 'the replica waited for / not'])
      for (const batch of ['1000', '100']) {
        const [, , cpu] = row(result.markdown, `${compared}, batches of ${batch}`);
        expect(Number(cpu!.replace(/[*×]/g, ''))).toBeGreaterThan(0); // CPU ratio
      }
    // The probes' 202s through the collector that waits for the replica, timed.
    const [, probes, p50] = row(result.markdown, 'always, a replica, REDIS_WAIT_REPLICAS=1');
    expect([Number(probes), Number(p50)]).toEqual([10, expect.any(Number)]);
    expect(Number(p50)).toBeGreaterThan(0);
  }, 240_000);
});
