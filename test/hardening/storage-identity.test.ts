import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadOrCreateIdentity } from '../../packages/shared/src/index.js';
import { CLIENT_BIN, SERVER_BIN, harness, idOf, testPort, type Daemon } from '../support/daemons.js';

/**
 * `id` and a daemon's first start on a fresh state directory, at the same moment, both find no
 * identity and make one. Exactly one of them may win: the id printed is the one the daemon uses, and
 * the one it uses after a restart. (Before: each kept its own key, and the disk held only one.)
 */
const h = harness();
const port = String(testPort());
/** Fresh state directories raced per daemon (before the fix about 4 in 10 ended with two identities). */
const ROUNDS = 6;
const PARALLEL = 6;

afterAll(() => h.cleanup());

interface Role {
  bin: string;
  /** The daemon's arguments for a state directory (besides it). */
  args: (state: string) => Promise<string[]>;
  /** The log line that says which id the daemon runs with. */
  startedMsg: string;
}

const server: Role = {
  bin: SERVER_BIN,
  args: async (state) => {
    const config = join(await h.dir('config'), 'server.json');
    await writeFile(config, JSON.stringify({ groups: [{ name: 'Developers', members: [] }] }));
    return ['--config', config, '--interface', '127.0.0.1', '--port', port, '--tcp-port', '0'];
  },
  startedMsg: 'group-server started',
};

const client: Role = {
  bin: CLIENT_BIN,
  args: async () => ['--downloads', await h.dir('downloads'), '--interface', '127.0.0.1', '--port', port],
  startedMsg: 'control plane open',
};

async function runningId(daemon: Daemon, role: Role): Promise<string> {
  return String((await daemon.waitForMsg(role.startedMsg, {}, 30_000)).id);
}

/** The id the state directory holds, read in-process (it exists by then, so nothing is made). */
async function idOnDisk(state: string): Promise<string> {
  return (await loadOrCreateIdentity(state, 'unused')).signer.id;
}

async function round(role: Role, name: string, round: number): Promise<void> {
  const state = await h.dir(`${name}-state`);
  const args = [...await role.args(state), '--state-dir', state];
  const daemon = h.spawn(`${name}#${round}`, role.bin, args);
  const printed = await idOf(h, role.bin, state);
  const used = await runningId(daemon, role);
  expect(printed, `round ${round}: "id" printed another id than the daemon uses`).toBe(used);
  await daemon.stop('SIGKILL');
  expect(await idOnDisk(state), `round ${round}: the id on disk, which a restart reads`).toBe(used);
  if (round === 0) {
    const restarted = h.spawn(`${name}#${round}-again`, role.bin, args);
    expect(await runningId(restarted, role), 'the id after a restart').toBe(used);
    await restarted.stop('SIGKILL');
  }
}

/** Rounds run a few at a time, each on its own state directory. */
async function race(role: Role, name: string): Promise<void> {
  for (let first = 0; first < ROUNDS; first += PARALLEL) {
    await Promise.all(Array.from({ length: Math.min(PARALLEL, ROUNDS - first) }, (_, i) => round(role, name, first + i)));
  }
}

describe('an identity made by two processes at once', () => {
  it('server: "group-server id" racing the first start prints the id the daemon uses, before and after a restart', async () => {
    await race(server, 'server');
  });

  it('client: "group-client id" racing the first start prints the id the daemon uses, before and after a restart', async () => {
    await race(client, 'client');
  });
});
