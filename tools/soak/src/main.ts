// Soak: npm run test:soak -- --minutes 10 [--rate 300] — steady load through a whole local fleet, every process's
// RSS, Redis used_memory and the flush lag sampled; exits non-zero when memory keeps growing, the lag is unbounded
// or a count is off.
import { parseArgs } from 'node:util';
import { runSoak } from './soak';

const { values: a } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    rate: { type: 'string', default: '300' },
    'sample-seconds': { type: 'string', default: '5' },
    'warmup-seconds': { type: 'string' },
    'max-rss-growth': { type: 'string', default: '0.15' },
    'max-rss-growth-mb': { type: 'string', default: '15' },
    'max-redis-growth': { type: 'string', default: '0.25' },
    'max-redis-growth-mb': { type: 'string', default: '5' },
    'max-flush-lag': { type: 'string', default: '30' },
    'dedupe-window': { type: 'string', default: '60' },
    seed: { type: 'string', default: '1' },
    help: { type: 'boolean', default: false },
  },
  strict: true,
});
if (a.help) {
  process.stdout.write(
    'usage: npm run test:soak -- [--minutes 10] [--rate 300] [--sample-seconds 5] [--warmup-seconds N]\n' +
      '  [--max-rss-growth 0.15] [--max-rss-growth-mb 15] [--max-redis-growth 0.25] [--max-redis-growth-mb 5]\n' +
      '  [--max-flush-lag 30] [--dedupe-window 60] [--seed 1]\n',
  );
  process.exit(0);
}
const num = (name: string, v: string | undefined, min: number): number => {
  const n = Number(v);
  if (v === undefined || !Number.isFinite(n) || n < min) {
    process.stderr.write(`soak: --${name} must be a number >= ${min}, got ${JSON.stringify(v)}\n`);
    process.exit(2);
  }
  return n;
};
const minutes = num('minutes', a.minutes, 0.5);
const result = await runSoak({
  minutes,
  rate: num('rate', a.rate, 1),
  sampleSeconds: num('sample-seconds', a['sample-seconds'], 1),
  // Default: a fifth of the run, at least the dedupe window (until then batch ids pile up by design), at most 3 min.
  warmupSeconds:
    a['warmup-seconds'] !== undefined
      ? num('warmup-seconds', a['warmup-seconds'], 0)
      : Math.min(180, Math.max(Number(a['dedupe-window']) + 15, minutes * 12)),
  maxRssGrowth: num('max-rss-growth', a['max-rss-growth'], 0),
  maxRssGrowthMb: num('max-rss-growth-mb', a['max-rss-growth-mb'], 0),
  maxRedisGrowth: num('max-redis-growth', a['max-redis-growth'], 0),
  maxRedisGrowthMb: num('max-redis-growth-mb', a['max-redis-growth-mb'], 0),
  maxFlushLagSeconds: num('max-flush-lag', a['max-flush-lag'], 0),
  dedupeWindowSeconds: num('dedupe-window', a['dedupe-window'], 60),
  seed: num('seed', a.seed, 0),
  log: (line) => process.stdout.write(`${line}\n`),
});
process.exit(result.ok ? 0 : 1);
