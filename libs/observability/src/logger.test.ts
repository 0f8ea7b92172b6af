import { Writable } from 'node:stream';
import { fastify } from 'fastify';
import { describe, expect, it } from 'vitest';
import { createLogger } from './index';

function capture(level?: 'debug' | 'info' | 'warn') {
  const lines: Array<Record<string, any>> = [];
  const raw: string[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n').filter(Boolean)) {
        raw.push(l);
        lines.push(JSON.parse(l));
      }
      cb();
    },
  });
  const log = createLogger({ name: 'collector', ...(level ? { level } : {}), destination });
  return { log, lines, raw };
}

describe('createLogger', () => {
  it("logs a Fastify request's path, never its query string (a key in ?access_token= stays out of the log)", async () => {
    const { log, raw } = capture();
    const app = fastify({ loggerInstance: log });
    app.get('/readyz', async () => ({ status: 'ready' }));
    await app.inject({ method: 'GET', url: '/readyz?access_token=tly_secretsecret&x=1' });
    await app.close();
    const requestLines = raw.filter((l) => l.includes('/readyz'));
    expect(requestLines.length).toBeGreaterThan(0);
    expect(raw.join('\n')).not.toContain('tly_secretsecret');
    expect(JSON.parse(requestLines[0]!).req).toMatchObject({ method: 'GET', url: '/readyz' });
  });

  it('writes JSON lines with name, level, ISO time, object first', () => {
    const { log, lines } = capture();
    log.info({ queue: 'events', jobId: 'j1' }, 'flushed row');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ name: 'collector', level: 30, queue: 'events', jobId: 'j1', msg: 'flushed row' });
    expect(lines[0]!['time']).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  });

  it('honours the level', () => {
    const { log, lines } = capture('warn');
    log.info('hidden');
    log.warn('shown');
    expect(lines.map((l) => l['msg'])).toEqual(['shown']);
    expect(capture().log.level).toBe('info');
  });

  it('never writes keys or tokens in plain text', () => {
    const { log, lines, raw } = capture();
    log.info({ req: { method: 'POST', headers: { authorization: 'Bearer ik_SECRET1', host: 'x' } } }, 'request');
    log.info({ headers: { authorization: 'Bearer ik_SECRET2' } }, 'headers');
    log.info({ tenant: { store: 'S1', apiKey: 'ik_SECRET3', key: 'ik_SECRET4', token: 'SECRET5' } }, 'nested');
    log.info({ apiKey: 'ik_SECRET6', key: 'ik_SECRET7', token: 'SECRET8', authorization: 'Bearer SECRET9' }, 'top level');
    log.child({ auth: { token: 'SECRET10' } }).info('child');

    for (const l of raw) expect(l).not.toMatch(/SECRET/);
    expect(lines[0]!['req']).toEqual({ method: 'POST', headers: { authorization: '[redacted]', host: 'x' } });
    expect(lines[1]!['headers']).toEqual({ authorization: '[redacted]' });
    expect(lines[2]!['tenant']).toEqual({ store: 'S1', apiKey: '[redacted]', key: '[redacted]', token: '[redacted]' });
    expect(lines[3]).toMatchObject({ apiKey: '[redacted]', key: '[redacted]', token: '[redacted]', authorization: '[redacted]' });
    expect(lines[4]!['auth']).toEqual({ token: '[redacted]' });
  });

  it("never writes the arguments of the Redis command an error carries (a failed AUTH's password)", () => {
    const { log, lines, raw } = capture();
    // What ioredis rejects a failed AUTH, and every command queued behind it, with.
    const err = Object.assign(new Error('WRONGPASS invalid username-password pair'), {
      command: { name: 'auth', args: ['user', 's3cret'] },
    });
    log.warn({ err }, 'not following the sealers’ epochs');
    expect(raw.join('\n')).not.toContain('s3cret');
    expect(lines[0]!['err']).toMatchObject({ message: err.message, command: { name: 'auth', args: '[redacted]' } });
    expect(err.command.args).toEqual(['user', 's3cret']); // the error itself is left as it was
  });
});
