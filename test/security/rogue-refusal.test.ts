import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { luhn32, newJoinCode, parseJoinCode } from '../../packages/shared/src/index.js';
import { CLIENT_BIN, SERVER_BIN, harness, testPort } from '../support/daemons.js';
import { identityIn } from './tools.js';

/**
 * A member with a join code and nothing pinned trusts no server yet: a server whose id only matches the
 * code's prefix (cheap to make) can refuse its JOIN, and the member shows the refusal, but it must not
 * give up for good (exit 77, which systemd does not restart) on that word. Real processes on loopback:
 * the rogue is a real group-server that never issued the code, so it answers BAD_CODE.
 */
const h = harness();
const network = ['--interface', '127.0.0.1', '--port', String(testPort())];

afterAll(() => h.cleanup());

describe('a refusal from a server that only matches the join code', () => {
  it('is shown, but the member keeps asking instead of exiting 77', async () => {
    const rogueState = await h.dir('rogue');
    const rogueId = (await identityIn(rogueState, 'group-server')).signer.id;
    const config = join(rogueState, 'config.json');
    await writeFile(config, JSON.stringify({ groups: [{ name: 'Developers', members: [] }] }));
    const rogue = h.spawn('rogue', SERVER_BIN, ['--config', config, '--state-dir', rogueState, '--tcp-port', '0', ...network]);
    await rogue.waitForMsg('group-server started');
    const body = rogueId.slice(0, 4) + newJoinCode(rogueId).secret;
    const code = parseJoinCode(body + luhn32(body)).text;

    const state = await h.dir('victim-state');
    const downloads = await h.dir('victim-dl');
    const victim = h.spawn('victim', CLIENT_BIN, [
      '--join', 'Developers', '--code', code, '--state-dir', state, '--downloads', downloads, '--no-peers', '--log-level', 'debug', ...network,
    ]);
    const refused = await victim.waitForMsg('join refused', { group: 'Developers', server: rogueId });
    expect(refused).toMatchObject({ reason: 'bad join code', unproven: true });
    // Still asking: a JOIN after the refusal (waitForLog fails at once if the member exits instead).
    const after = victim.logs.indexOf(refused);
    await victim.waitForLog((l) => l.msg === 'join sent' && victim.logs.indexOf(l) > after, 30_000, 'a JOIN after the refusal');
    expect(victim.logs.some((l) => l.level === 60)).toBe(false);

    const status = await h.run(CLIENT_BIN, ['status', '--json', '--state-dir', state]);
    const report = JSON.parse(status.stdout) as { running: boolean; status: { groups: Array<{ state: string; reason: string }>; stopReason: string | null } };
    expect(report.running).toBe(true);
    expect(report.status.groups).toEqual([expect.objectContaining({ state: 'refused', reason: 'wrong join code' })]);
    expect(report.status.stopReason).toBeNull();
    await expect(stat(join(state, 'server.json'))).rejects.toThrow(/ENOENT/);
    await victim.stop('SIGINT');
    await rogue.stop('SIGINT');
  });
});
