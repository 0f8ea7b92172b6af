import { describe, expect, it } from 'vitest';
import { Lifecycle } from './lifecycle';

describe('Lifecycle', () => {
  it('stops newest first, once, and reports failures without stopping the rest', async () => {
    const order: string[] = [];
    const failed: string[] = [];
    const l = new Lifecycle((name) => failed.push(name));
    l.add('redis', async () => void order.push('redis'));
    l.add('dynalite', async () => {
      order.push('dynalite');
      throw new Error('x');
    });
    l.add('apps', async () => void order.push('apps'));
    await Promise.all([l.stop(), l.stop()]);
    await l.stop();
    expect(order).toEqual(['apps', 'dynalite', 'redis']);
    expect(failed).toEqual(['dynalite']);
  });

  it('stops at once what is added after stopping began, and stop() waits for it', async () => {
    const l = new Lifecycle();
    let lateStopped = false;
    await l.stop();
    l.add('late', async () => {
      await new Promise((r) => setTimeout(r, 20));
      lateStopped = true;
    });
    expect(l.isStopping).toBe(true);
    await l.stop();
    expect(lateStopped).toBe(true);
  });
});
