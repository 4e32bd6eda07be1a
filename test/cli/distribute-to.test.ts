import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { Cluster, finalPath, writeRandomFile, type Member } from '../durability/cluster.js';

/**
 * `distribute --to`: the named members of the group get the file, the others do not, and a member
 * joining later is not given it as backlog. A name that is not a member is a usage error (exit 2)
 * before anything is stored.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
let alice: Member;
let bob: Member;
let carol: Member;
let dave: Member;
let source: string;

beforeAll(async () => {
  [alice, bob, carol, dave] = await Promise.all(['alice', 'bob', 'carol', 'dave'].map((name) => c.member(name, [GROUP]))) as [Member, Member, Member, Member];
  source = await h.dir('source');
  await c.startServer([{ name: GROUP, members: [alice, bob, carol, dave] }]);
  await c.startOnline([alice, bob, carol]);
});

afterAll(() => h.cleanup());

const received = async (m: Member): Promise<string> => readFile(join(m.state, 'received.jsonl'), 'utf8').catch(() => '');

async function storeFiles(): Promise<string[]> {
  return (await readdir(join(c.serverState, 'store'))).sort();
}

describe('distribute --to', () => {
  it('a bad name or a non-member id exits 2 and stores nothing', async () => {
    const file = join(source, 'never.bin');
    await writeRandomFile(file, 64 * 1024);
    const before = await storeFiles();
    const unknown = await c.distribute(GROUP, [file], ['--to', 'alice', 'nosuchmember']);
    expect(unknown.code, unknown.stderr).toBe(2);
    expect(unknown.stderr).toMatch(/no member of Developers is named "nosuchmember"/);
    // dave is allowed by the config but has not joined: not a member of the group yet.
    const notJoined = await c.distribute(GROUP, [file], ['--to', dave.id, '--json']);
    expect(notJoined.code).toBe(2);
    expect((JSON.parse(notJoined.stdout) as { error: { code: string; message: string } }).error).toMatchObject({
      code: 'GC_ERR_BAD_ID', message: expect.stringMatching(/is not a member of Developers/),
    });
    expect(await storeFiles()).toEqual(before);
    expect(await c.deliveries()).toEqual([]);
  });

  it('--to alice and bob\'s short id: both verify it, carol gets nothing, a later joiner is not given it', async () => {
    const file = join(source, 'patch.bin');
    const sha256 = await writeRandomFile(file, 1024 * 1024);
    const result = await c.distribute(GROUP, [file], ['--to', 'alice', bob.id.slice(0, 7), '--json']);
    expect(result.code, result.stderr).toBe(0);
    const doc = JSON.parse(result.stdout) as { transfers: Array<{ id: string; to: string[] }>; deliveries: Array<{ member: string; state: string }> };
    const transfer = doc.transfers[0]!.id;
    expect(doc.transfers[0]!.to.sort()).toEqual([alice.id, bob.id].sort());
    expect(doc.deliveries.map((d) => [d.member, d.state]).sort()).toEqual([[alice.id, 'delivered'], [bob.id, 'delivered']].sort());
    for (const m of [alice, bob]) expect(await sha256File(finalPath(m, GROUP, 'patch.bin')), m.name).toBe(sha256);
    expect(await c.statusText()).toMatch(new RegExp(`^${transfer.slice(0, 12)} +patch\\.bin +Developers \\(to 2\\) `, 'm'));

    // A file for everyone after it: carol receiving it shows the --to one was never on her way.
    const everyone = join(source, 'everyone.bin');
    const everyoneSha = await writeRandomFile(everyone, 64 * 1024);
    expect((await c.distribute(GROUP, [everyone])).code).toBe(0);
    expect(await sha256File(finalPath(carol, GROUP, 'everyone.bin'))).toBe(everyoneSha);
    expect(await readdir(join(carol.downloads, GROUP))).toEqual(['everyone.bin']);
    expect(await received(carol)).not.toContain(transfer);
    expect((await c.deliveries()).filter((d) => d.transfer === transfer).map((d) => d.member).sort()).toEqual([alice.id, bob.id].sort());

    // dave joins later: the backlog (latest of each name) gives him everyone.bin, never patch.bin.
    c.startMember(dave);
    await c.online(dave);
    await c.server!.waitForMsg('delivered', { member: dave.id, file: 'everyone.bin' }, 60_000);
    expect(await readdir(join(dave.downloads, GROUP))).toEqual(['everyone.bin']);
    expect((await c.deliveries()).filter((d) => d.transfer === transfer).map((d) => d.member).sort()).toEqual([alice.id, bob.id].sort());
  });
});
