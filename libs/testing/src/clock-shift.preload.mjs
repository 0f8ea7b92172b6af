// Preload (`node --import`) that shifts the wall clock of this Node process, and of every Node process it starts
// (they inherit NODE_OPTIONS), by TALLY_TEST_CLOCK_OFFSET_MS milliseconds: Date.now(), `new Date()` and `Date()`.
// A Date built from arguments, Date.parse and Date.UTC are unchanged; timers, performance.now() and
// process.hrtime() are untouched, so durations stay real. Non-Node processes (redis-server, Chromium) keep the
// real clock. Used by `npm run test:at -- HH:MM` (see test-at.ts) to run the suite at a chosen time of day.
const raw = process.env.TALLY_TEST_CLOCK_OFFSET_MS;
const offset = raw === undefined || raw === '' ? 0 : Number(raw);
if (!Number.isSafeInteger(offset))
  throw new Error(`TALLY_TEST_CLOCK_OFFSET_MS must be an integer of milliseconds, got ${JSON.stringify(raw)}`);

if (offset !== 0 && !globalThis.__tallyClockShift) {
  const RealDate = globalThis.Date;
  const now = () => RealDate.now() + offset;
  function Date(...args) {
    if (new.target === undefined) return new RealDate(now()).toString();
    return Reflect.construct(RealDate, args.length === 0 ? [now()] : args, new.target);
  }
  // Same prototype, so instanceof Date, subclasses and every Date method keep working; statics (parse, UTC) inherit.
  Date.prototype = RealDate.prototype;
  Object.setPrototypeOf(Date, RealDate);
  Object.defineProperty(Date, 'now', { value: now, writable: true, configurable: true });
  Object.defineProperty(Date, 'name', { value: 'Date' });
  Object.defineProperty(Date, 'length', { value: 7 });
  globalThis.Date = Date;
  globalThis.__tallyClockShift = offset;
}
