/**
 * The sum of the deltas an events job carries for row `pk` and metric `metric` (any day), when the collector rolled
 * the batch up (`rows`: per row, pk, field count, then `<day>|<metric>` and delta pairs); 0 when absent.
 */
export function sumOfJobRows(rows: ReadonlyArray<string | number> | undefined, pk: string, metric: string): bigint {
  let sum = 0n;
  const list = rows ?? [];
  for (let i = 0; i < list.length;) {
    const n = Number(list[i + 1]);
    if (list[i] === pk) {
      for (let j = i + 2; j < i + 2 + 2 * n; j += 2) if (String(list[j]).endsWith(`|${metric}`)) sum += BigInt(list[j + 1]!);
    }
    i += 2 + 2 * n;
  }
  return sum;
}
