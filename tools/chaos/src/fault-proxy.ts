import { Agent, createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { buffer } from 'node:stream/consumers';
import { createRng } from '@tally/loadgen';

/**
 * Probability per request of each fault (the rest are forwarded untouched): `throttle` answers 400
 * ProvisionedThroughputExceededException; `error500` an InternalFailure and `drop` destroys the connection, half of
 * them after forwarding (applied, the answer lost); `slow` holds the answer back `slowMs` (past the SDK's deadline the request times out and is retried).
 */
export interface FaultRates {
  throttle: number;
  error500: number;
  slow: number;
  drop: number;
}

export const NO_FAULTS: FaultRates = { throttle: 0, error500: 0, slow: 0, drop: 0 };
const FAULT_KINDS = Object.keys(NO_FAULTS) as Array<keyof FaultRates>;

export type FaultProxy = Awaited<ReturnType<typeof startFaultProxy>>;

const THROTTLE_BODY = JSON.stringify({
  __type: 'com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException',
  message:
    'The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API. (fault proxy)',
});
const INTERNAL_BODY = JSON.stringify({
  __type: 'com.amazon.coral.service#InternalFailure',
  message: 'The request processing has failed because of an unknown error, exception or failure. (fault proxy)',
});
/** Hop-by-hop headers of dynalite's answer, not passed on. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding']);

/**
 * A DynamoDB fault injector: a node:http proxy on 127.0.0.1 that forwards to dynalite (`target`) and injects the
 * FaultRates on a schedule seeded by `seed` (the n-th request gets the same fault for the same seed and rates).
 */
export async function startFaultProxy(opts: { target: string; seed: number; slowMs?: readonly [number, number] }) {
  const target = new URL(opts.target);
  const rng = createRng(opts.seed);
  let rates = NO_FAULTS;
  const [slowMin, slowMax] = opts.slowMs ?? [500, 4_500];
  let ops: Set<string> | undefined;
  const counts = { ...NO_FAULTS };
  let down = false;
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });

  const passThrough = (res: ServerResponse, status: number, headers: IncomingMessage['headers'], payload: Buffer) => {
    if (res.destroyed) return;
    const h = Object.fromEntries(Object.entries(headers).filter(([k, v]) => v !== undefined && !HOP_BY_HOP.has(k)));
    res.writeHead(status, { ...h, 'content-length': String(payload.length) }).end(payload);
  };
  const reply = (res: ServerResponse, status: number, body: string) =>
    passThrough(res, status, { 'content-type': 'application/x-amz-json-1.0', 'x-amzn-requestid': `FAULT${Date.now()}` }, Buffer.from(body));

  /** Forwards the request and calls `answer` with dynalite's reply; drops the client's connection if dynalite is unreachable. */
  const forward = (req: IncomingMessage, body: Buffer, res: ServerResponse, answer = passThrough) => {
    const lost = () => res.socket?.destroy();
    const headers = { ...req.headers, host: target.host, 'content-length': String(body.length) };
    const up = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers, agent }, (ures) =>
      buffer(ures).then((payload) => answer(res, ures.statusCode ?? 502, ures.headers, payload), lost),
    );
    up.on('error', lost);
    up.end(body);
  };

  const server = createServer(async (req, res) => {
    // A request that fails before its end (the client went away) is dropped.
    const body = await buffer(req).catch(() => undefined);
    if (down || !body) return req.socket.destroy();
    const target = String(req.headers['x-amz-target'] ?? '');
    if (ops && !ops.has(target.slice(target.indexOf('.') + 1))) return forward(req, body, res);
    // One draw decides the fault (each kind a slice of [0, 1) as wide as its rate), a second its variant: the
    // schedule depends only on the request's rank.
    const u = rng.next();
    const variant = rng.next();
    let edge = 0;
    const fault = FAULT_KINDS.find((kind) => u < (edge += rates[kind]));
    if (fault) counts[fault]++;
    const before = variant < 0.5;
    if (fault === 'throttle') return reply(res, 400, THROTTLE_BODY);
    if (fault === 'error500')
      return before ? reply(res, 500, INTERNAL_BODY) : forward(req, body, res, () => reply(res, 500, INTERNAL_BODY));
    if (fault === 'drop') return before ? req.socket.destroy() : forward(req, body, res, () => req.socket.destroy());
    if (fault !== 'slow') return forward(req, body, res);
    const delay = slowMin + Math.floor(variant * (slowMax - slowMin));
    forward(req, body, res, (...answer) => setTimeout(() => passThrough(...answer), delay));
  });
  server.on('connection', (socket: Socket) => {
    if (down) socket.destroy();
    socket.on('error', () => undefined);
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  return {
    /** `http://127.0.0.1:<port>`: give it to the apps as DYNAMODB_ENDPOINT. */
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    /** Faults injected, by kind. */
    counts: counts as Readonly<typeof counts>,
    setRates: (r: Partial<FaultRates>) => void (rates = { ...rates, ...r }),
    /** Faults only for these operations (`UpdateItem`, `GetItem`, … from X-Amz-Target); undefined = every request. */
    setOperations: (list: readonly string[] | undefined) => void (ops = list ? new Set(list) : undefined),
    /** Down: every connection is destroyed on arrival (an outage); up: forwarding again. */
    setDown(d: boolean) {
      down = d;
      if (d) server.closeAllConnections();
    },
    async close() {
      server.closeAllConnections();
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
