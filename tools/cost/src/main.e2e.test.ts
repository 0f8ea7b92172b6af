import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { REPO_ROOT, startProcess } from '@tally/testing';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MEASURED, DEFAULT_WORKLOAD } from './sizing';

const main = new URL('./main.ts', import.meta.url).pathname;

const run = (...args: string[]) => runWith({}, ...args);

async function runWith(env: Record<string, string>, ...args: string[]) {
  const p = await startProcess(process.execPath, ['--no-warnings', '--import', 'tsx', main, ...args], { name: 'cost', env });
  const exit = await p.exited;
  return { code: exit.code, output: p.output() };
}

describe('npm run cost', () => {
  it('prints its usage with --help, and answers an unknown or incomplete option with it and exit 2', async () => {
    const help = await run('--help');
    expect(help.code).toBe(0);
    expect(help.output).toMatch(/^usage: npm run cost -- \[--aggregator URL\].*\n.*\n\s+npm run cost -- size \[--stores N\]/);
    const unknown = await run('size', '--bogus', '1');
    expect(unknown.code).toBe(2);
    expect(unknown.output).toContain("tally cost: Unknown option '--bogus'");
    expect(unknown.output).toContain('usage: npm run cost');
    const missing = await run('--price');
    expect(missing.code).toBe(2);
    expect(missing.output).toContain("tally cost: Option '--price <value>' argument missing");
  });

  it('answers a 0 for a figure it divides by with exit 2 naming the flag, not an infinite deployment', async () => {
    for (const flag of ['events-per-batch', 'aggregator-eps', 'e2e-eps']) {
      const r = await run('size', `--${flag}`, '0');
      expect(r.code, flag).toBe(2);
      expect(r.output).toContain(`tally cost size: --${flag} must be a positive number, got 0`);
      expect(r.output).not.toMatch(/∞|Infinity/);
    }
    // Other figures may be 0.
    const r = await run('size', '--queries', '0', '--rcu-per-query', '0');
    expect(r.code).toBe(0);
    expect(r.output).not.toMatch(/∞|Infinity|NaN/);
  });

  it('exits 1 saying which metric is missing or 0 where, rather than price no events at $0', async () => {
    // Two fake apps' /metrics: a writer (no tally_events_applied_total) and an aggregator that applied nothing.
    const serve = async (text: string) => {
      const server = createServer((_req, res) => res.end(text)).listen(0, '127.0.0.1');
      await new Promise((resolve) => server.once('listening', resolve));
      return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
    };
    const writer = await serve('tally_dynamodb_consumed_write_units_total{operation="UpdateItem"} 1200\n');
    const idle = await serve('tally_events_applied_total{app="bucket-aggregator"} 0\n');
    try {
      const swapped = await run('--aggregator', writer.url, '--writer', idle.url);
      expect(swapped.code).toBe(1);
      expect(swapped.output.trim()).toBe(
        `[stderr] tally cost: tally_events_applied_total is missing at ${writer.url}/metrics; check that each --aggregator URL is a bucket-aggregator's and each --writer URL a dynamo-writer's (not swapped)`,
      );
      const noTraffic = await run('--aggregator', idle.url, '--writer', writer.url, '--json');
      expect(noTraffic.code).toBe(1);
      expect(noTraffic.output).toContain(
        `tally_events_applied_total is 0 at ${idle.url}/metrics; no events applied yet: send traffic first`,
      );
      expect(noTraffic.output).not.toContain('USD');
    } finally {
      writer.server.close();
      idle.server.close();
    }
  });

  it('sends METRICS_TOKEN of its environment as the bearer token of each /metrics it reads', async () => {
    const seen: Array<string | undefined> = [];
    const server = createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.end('tally_events_applied_total{app="bucket-aggregator"} 0\n');
    }).listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      await runWith({ METRICS_TOKEN: 'cost-test-token-0123456789' }, '--aggregator', url, '--writer', url);
      expect(seen).toEqual(['Bearer cost-test-token-0123456789', 'Bearer cost-test-token-0123456789']);
      seen.length = 0;
      await runWith({ METRICS_TOKEN: '' }, '--aggregator', url, '--writer', url);
      expect(seen).toEqual([undefined, undefined]);
    } finally {
      server.close();
    }
  });

  it('sizes the default workload of docs/SCALING.md from the figures that document quotes, and prints its Result', async () => {
    const scaling = readFileSync(path.join(REPO_ROOT, 'docs', 'SCALING.md'), 'utf8');
    const input = (label: string) => {
      const row = scaling.split('\n').find((l) => l.startsWith(`| ${label} |`));
      return Number(row?.split('|')[2]!.trim().replaceAll(',', ''));
    };
    expect({
      writeUnitsPerMillionEvents: input('Write units per million events (default rules)'),
      readUnitsPerMillionEvents: input("Writers' read units per million events (default rules)"),
      readUnitsPerQuery: input('Read units per query'),
      bytesPerProductRow: input('Redis bytes per product row (daily flush)'),
      productRowEntries: input('Outbox entries per product row'),
      productRowCounts: input('Counts per product row'),
      bytesPerPageRow: input('Redis bytes per page row (daily flush)'),
      pageRowEntries: input('Outbox entries per page row'),
      pageRowCounts: input('Counts per page row'),
      bytesPerVisitorRow: input('Redis bytes per visitor row (idle flush)'),
      visitorRowEntries: input('Outbox entries per visitor row'),
      visitorRowCounts: input('Counts per visitor row'),
      bytesPerStoreRow: input('Redis bytes per store row (hourly flush)'),
      storeRowEntries: input('Outbox entries per store row'),
      storeRowCounts: input('Counts per store row'),
      bytesPerOutboxEntry: input('Redis bytes per outbox entry'),
      bytesPerIdempotencyRecord: input('Redis bytes per idempotency record'),
      bytesPerStore: input('Redis bytes per store'),
      bytesPerDedupeRecord: input('Redis bytes per dedupe record'),
      bytesPerRankingMember: input('Redis bytes per ranking member (rankings of up to 128 members)'),
      bytesPerLargeRankingMember: input('Redis bytes per ranking member (rankings of more members)'),
      bytesPerCacheVersion: input('Redis bytes per cache version'),
      aggregatorEventsPerSecond: input('Events/s one aggregator process applies (100-event batches)'),
      collectorCpuMsPer1000Events: input('Collector CPU ms per 1,000 events (100-event batches)'),
      endToEndEventsPerSecondPerRedis: input('Events/s end to end on one Redis (all apps on 2 shared cores, 100-event batches)'),
    }).toEqual(DEFAULT_MEASURED);
    expect([input('Bucket seconds'), input('Share of batches with an Idempotency-Key')]).toEqual([
      DEFAULT_WORKLOAD.bucketSeconds,
      DEFAULT_WORKLOAD.keyedBatchShare,
    ]);
    const r = await run('size');
    expect(r.code).toBe(0);
    // The table of docs/SCALING.md, "Result", and nothing else.
    expect(r.output.trimEnd()).toBe(/## Result\n\n```\n([\s\S]*?)\n```/.exec(scaling)![1]);
  });
});
