import { Agent, createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createRng } from '@tally/loadgen';

/** Probability per request of each fault (the rest are forwarded untouched). */
export interface FaultRates {
  /** 400 ProvisionedThroughputExceededException, without forwarding. */
  throttle: number;
  /** 500 InternalFailure: half before forwarding, half after (the request was applied, its answer is lost). */
  error500: number;
  /** Forwarded, the answer held back `slowMs` (past the SDK's deadline it times out and is retried). */
  slow: number;
  /** Connection destroyed: half before forwarding, half after (applied, answer lost). */
  drop: number;
}

export const NO_FAULTS: FaultRates = { throttle: 0, error500: 0, slow: 0, drop: 0 };

export interface FaultCounts {
  forwarded: number;
  throttle: number;
  error500: number;
  slow: number;
  drop: number;
  /** Requests and connections refused while down. */
  refused: number;
  /** Requests whose upstream (dynalite) could not be reached: their connection is dropped. */
  upstreamDown: number;
}

export interface FaultProxyOptions {
  /** dynalite's endpoint, e.g. http://127.0.0.1:4567 */
  target: string;
  /** Seed of the fault schedule: the n-th request gets the same fault for the same seed and rates. */
  seed: number;
  rates?: Partial<FaultRates>;
  /** Delay of slow answers, [min, max] ms. Default [500, 4500]. */
  slowMs?: readonly [number, number];
  /** Default a free port. */
  port?: number;
}

export interface FaultProxy {
  /** `http://127.0.0.1:<port>`: give it to the apps as DYNAMODB_ENDPOINT. */
  readonly url: string;
  readonly port: number;
  readonly counts: Readonly<FaultCounts>;
  setRates(rates: Partial<FaultRates>): void;
  /** Faults only for these operations (`UpdateItem`, `GetItem`, … from X-Amz-Target); undefined = every request. */
  setOperations(ops: readonly string[] | undefined): void;
  setSlowMs(range: readonly [number, number]): void;
  /** Down: every connection is destroyed on arrival (an outage); up: forwarding again. */
  setDown(down: boolean): void;
  readonly down: boolean;
  close(): Promise<void>;
}

const THROTTLE_BODY = JSON.stringify({
  __type: 'com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException',
  message:
    'The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API. (fault proxy)',
});
const INTERNAL_BODY = JSON.stringify({
  __type: 'com.amazon.coral.service#InternalFailure',
  message: 'The request processing has failed because of an unknown error, exception or failure. (fault proxy)',
});

/**
 * A DynamoDB fault injector: a node:http proxy on 127.0.0.1 that forwards to dynalite and, on a seeded
 * schedule, answers throttling (HTTP 400 ProvisionedThroughputExceededException), 500s, slow replies, and
 * dropped connections (socket.destroy) — some of the 500s and drops after the request was applied, the case
 * where a client cannot know whether its write happened.
 */
export async function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  const target = new URL(opts.target);
  const rng = createRng(opts.seed);
  let rates: FaultRates = { ...NO_FAULTS, ...opts.rates };
  let [slowMin, slowMax] = opts.slowMs ?? [500, 4_500];
  let ops: Set<string> | undefined;
  const counts: FaultCounts = { forwarded: 0, throttle: 0, error500: 0, slow: 0, drop: 0, refused: 0, upstreamDown: 0 };
  let down = false;
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const sockets = new Set<Socket>();

  const reply = (res: ServerResponse, status: number, body: string) => {
    if (res.destroyed) return;
    res.writeHead(status, {
      'content-type': 'application/x-amz-json-1.0',
      'content-length': Buffer.byteLength(body),
      'x-amzn-requestid': `FAULT${Date.now()}`,
    });
    res.end(body);
  };

  /** Forwards the request; calls `answer` with dynalite's reply, or drops the client's connection if dynalite is unreachable. */
  const forward = (
    req: IncomingMessage,
    body: Buffer,
    res: ServerResponse,
    answer: (status: number, headers: IncomingMessage['headers'], payload: Buffer) => void,
  ) => {
    const up = request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: target.host, 'content-length': String(body.length) },
        agent,
      },
      (ures) => {
        const chunks: Buffer[] = [];
        ures.on('data', (c: Buffer) => chunks.push(c));
        ures.on('end', () => answer(ures.statusCode ?? 502, ures.headers, Buffer.concat(chunks)));
        ures.on('error', () => {
          counts.upstreamDown++;
          res.socket?.destroy();
        });
      },
    );
    up.on('error', () => {
      counts.upstreamDown++;
      res.socket?.destroy();
    });
    up.end(body);
  };

  const passThrough = (res: ServerResponse) => (status: number, headers: IncomingMessage['headers'], payload: Buffer) => {
    if (res.destroyed) return;
    const h: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(headers))
      if (v !== undefined && k !== 'connection' && k !== 'keep-alive' && k !== 'transfer-encoding') h[k] = v;
    h['content-length'] = String(payload.length);
    res.writeHead(status, h);
    res.end(payload);
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => undefined);
    req.on('end', () => {
      if (down) {
        counts.refused++;
        req.socket.destroy();
        return;
      }
      const body = Buffer.concat(chunks);
      const target = String(req.headers['x-amz-target'] ?? '');
      if (ops && !ops.has(target.slice(target.indexOf('.') + 1))) {
        counts.forwarded++;
        return forward(req, body, res, passThrough(res));
      }
      // One draw decides the fault, a second its variant: the schedule depends only on the request's rank.
      const u = rng.next();
      const variant = rng.next();
      let edge = rates.throttle;
      if (u < edge) {
        counts.throttle++;
        return reply(res, 400, THROTTLE_BODY);
      }
      if (u < (edge += rates.error500)) {
        counts.error500++;
        if (variant < 0.5) return reply(res, 500, INTERNAL_BODY);
        return forward(req, body, res, () => reply(res, 500, INTERNAL_BODY));
      }
      if (u < (edge += rates.slow)) {
        counts.slow++;
        const delay = slowMin + Math.floor(variant * (slowMax - slowMin));
        return forward(req, body, res, (s, h, p) => setTimeout(() => passThrough(res)(s, h, p), delay));
      }
      if (u < (edge += rates.drop)) {
        counts.drop++;
        if (variant < 0.5) return req.socket.destroy();
        return forward(req, body, res, () => req.socket.destroy());
      }
      counts.forwarded++;
      forward(req, body, res, passThrough(res));
    });
  });
  server.on('connection', (socket) => {
    if (down) {
      counts.refused++;
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    counts,
    setRates(r) {
      rates = { ...rates, ...r };
    },
    setOperations(list) {
      ops = list ? new Set(list) : undefined;
    },
    setSlowMs(range) {
      [slowMin, slowMax] = range;
    },
    setDown(d) {
      down = d;
      if (d) for (const s of sockets) s.destroy();
    },
    get down() {
      return down;
    },
    async close() {
      for (const s of sockets) s.destroy();
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
