import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness } from '../support/daemons.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import { sha256File } from '../support/files.js';
import {
  Cluster, finalPath, heldBytes, MiB, partialDir, waitForNew, waitUntil, writeRandomFile, type Member,
} from './cluster.js';

/**
 * The data connection is cut mid-transfer, twice. The member reaches the server only through a TCP
 * relay the test holds: the server advertises the relay's port (--advertise-port), so the member
 * dials it, and cut() resets both halves of the connection at once.
 */
const h = harness();
const c = new Cluster(h);
const proxy = new TcpProxy();
const GROUP = 'Developers';
const SIZE = 96 * MiB;
let alice: Member;

beforeAll(async () => {
  alice = await c.member('alice', [GROUP]);
  const relayPort = await proxy.listen();
  const server = await c.startServer([{ name: GROUP, members: [alice] }], ['--advertise-port', String(relayPort)]);
  proxy.target = Number((await server.waitForMsg('group-server started')).tcpPort);
  await c.startOnline([alice]);
});

afterAll(async () => {
  await proxy.close();
  await h.cleanup();
});

describe('a cut connection', () => {
  it('the member dials the advertised port, and a transfer cut twice resumes each time and verifies', async () => {
    expect(proxy.accepted).toBe(1);
    const file = join(await h.dir('source'), 'cut.bin');
    const sha256 = await writeRandomFile(file, SIZE);
    const distributing = c.distribute(GROUP, [file]);
    const transfer = await c.transferOf('cut.bin');
    const server = c.server!;
    const member = alice.daemon!;

    const offsets: number[] = [];
    for (const at of [16 * MiB, 48 * MiB]) {
      await waitUntil(async () => (await heldBytes(alice)) >= at, `alice holding ${at} bytes`);
      const reconnected = waitForNew(member, 'connected', {}, 30_000);
      const interrupted = waitForNew(server, 'delivery interrupted', { transfer, member: alice.id });
      expect(proxy.cut()).toBe(2);
      await interrupted;
      await reconnected;
      const resumed = await waitForNew(member, 'resuming', { transfer }, 30_000);
      offsets.push(Number(resumed.offset));
    }
    expect(offsets[0]).toBeGreaterThanOrEqual(16 * MiB);
    expect(offsets[1]).toBeGreaterThanOrEqual(48 * MiB);
    expect(proxy.accepted).toBeGreaterThanOrEqual(3);

    const line = await server.waitForMsg('delivered', { transfer, member: alice.id }, 60_000);
    expect(Number(line.resumedAt)).toBe(offsets[1]);
    expect(Number(line.bytesSent)).toBe(SIZE - offsets[1]!);
    const result = await distributing;
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(await sha256File(finalPath(alice, GROUP, 'cut.bin'))).toBe(sha256);
    expect(await readdir(partialDir(alice))).toEqual([]);
  });
});
