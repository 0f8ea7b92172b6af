import { parseArgs } from 'node:util';
import { costOf } from './cost';

// tools/cost: write units and dollars per million events of a running fleet, from the apps' /metrics.
//   npm run cost -- --aggregator http://127.0.0.1:7403 --writer http://127.0.0.1:7404 [--price 0.625]
// --aggregator and --writer may repeat (one per replica). --price is USD per million write request units
// (DynamoDB on-demand; check your region's price).
const { values } = parseArgs({
  options: {
    aggregator: { type: 'string', multiple: true, default: ['http://127.0.0.1:7403'] },
    writer: { type: 'string', multiple: true, default: ['http://127.0.0.1:7404'] },
    price: { type: 'string', default: '0.625' },
    json: { type: 'boolean', default: false },
  },
});
const price = Number(values.price);
if (!Number.isFinite(price) || price < 0) {
  process.stderr.write(`tally cost: --price must be a non-negative number of USD per million write units, got ${values.price}\n`);
  process.exit(2);
}
const fetchText = async (base: string) => {
  try {
    const res = await fetch(new URL('/metrics', base));
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return await res.text();
  } catch (err) {
    process.stderr.write(`tally cost: cannot read ${base}/metrics: ${(err as Error).message}\n`);
    process.exit(1);
  }
};
const report = costOf(await Promise.all(values.aggregator!.map(fetchText)), await Promise.all(values.writer!.map(fetchText)), price);
if (values.json) console.log(JSON.stringify(report));
else {
  console.log(`events applied            ${report.events.toLocaleString('en-US')}`);
  console.log(`UpdateItem calls          ${report.updateItems.toLocaleString('en-US')}`);
  console.log(`write units consumed      ${report.writeUnits.toLocaleString('en-US')}`);
  console.log(`write units per 1M events ${Math.round(report.writeUnitsPerMillionEvents).toLocaleString('en-US')}`);
  console.log(`USD per 1M events         ${report.dollarsPerMillionEvents.toFixed(4)} (at $${price} per million write units)`);
}
