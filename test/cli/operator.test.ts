import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseMetrics } from '../support/metrics.js';
import { CLIENT_BIN, SERVER_BIN, harness, idOf, testPort, type Daemon } from '../support/daemons.js';
import { onTerminal } from './terminal.js';

/**
 * The operator's view of a running system, through the real CLIs: distribute with and without a
 * terminal, --json, status / groups / members, group-client status, --on-receive, and a scrape of
 * the metrics endpoint whose counts follow from what the test did.
 */
const h = harness();
const port = String(testPort());
const metricsPort = testPort();
const memberMetricsPort = metricsPort + 1;
const network = ['--interface', '127.0.0.1', '--port', port];
const ID = /^[A-Z2-7]{7}(-[A-Z2-7]{7}){7}$/;

interface Member { name: string; state: string; downloads: string; id: string; daemon?: Daemon }

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

describe('operator CLIs on loopback', () => {
  let serverState: string;
  let server: Daemon;
  let hooks: string;
  const members: Record<'alice' | 'bob', Member> = {} as never;
  const distributed: Array<{ transfer: string; size: number }> = [];
  let serverId: string;

  const serverCli = (args: string[], timeoutMs?: number) => h.run(SERVER_BIN, [...args, '--state-dir', serverState], timeoutMs);
  const newFile = async (name: string, size: number): Promise<{ path: string; content: Buffer }> => {
    const content = randomBytes(size);
    const path = join(serverState, '..', `${name}`);
    await writeFile(path, content);
    return { path, content };
  };

  beforeAll(async () => {
    serverState = join(await h.dir('server'), 'state');
    hooks = await h.dir('hooks');
    for (const name of ['alice', 'bob'] as const) {
      const state = await h.dir(`${name}-state`);
      members[name] = { name, state, downloads: await h.dir(`${name}-dl`), id: await idOf(h, CLIENT_BIN, state) };
    }
    serverId = await idOf(h, SERVER_BIN, serverState);
    const config = join(serverState, '..', 'server.json');
    // A comment and a trailing comma: the file format is JSON with comments.
    await writeFile(config, `{\n  // who may join\n  "groups": [{ "name": "Developers", "members": ["${members.alice.id}", "${members.bob.id}"] }],\n}\n`);
    server = h.spawn('server', SERVER_BIN, ['--config', config, '--state-dir', serverState, '--tcp-port', '0', '--metrics', `127.0.0.1:${metricsPort}`, ...network]);
    await server.waitForMsg('group-server started');
    await server.waitForMsg('metrics endpoint listening');
    // The server's own stream (--no-peers): the exact byte counts below are what it sent.
    const common = (m: Member) => [
      '--join', 'Developers', '--server-id', serverId, '--state-dir', m.state, '--downloads', m.downloads, '--name', m.name, '--no-peers', ...network,
    ];
    members.alice.daemon = h.spawn('alice', CLIENT_BIN, [
      ...common(members.alice),
      '--on-receive', 'printf "%s\\n" "$GROUPCAST_FILE" "$GROUPCAST_GROUP" "$GROUPCAST_SHA256" "$GROUPCAST_SIZE" "$GROUPCAST_NAME" > "$HOOKS/$GROUPCAST_TRANSFER"',
    ], { HOOKS: hooks });
    members.bob.daemon = h.spawn('bob', CLIENT_BIN, [
      ...common(members.bob),
      '--on-receive', 'case "$GROUPCAST_NAME" in slow*) sleep 30;; *) echo "no luck" >&2; exit 7;; esac',
      '--on-receive-timeout', '1s',
      '--metrics', String(memberMetricsPort),
    ]);
    for (const m of Object.values(members)) await server.waitForMsg('member online', { member: m.id });
  });

  afterAll(() => h.cleanup());

  it('distribute without a terminal prints progress lines, a line per delivery and the summary table', async () => {
    const { path, content } = await newFile('build.bin', 24 * 1024 * 1024);
    const result = await serverCli(['distribute', 'Developers', path, '--progress-interval', '0']);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    const out = result.stdout;
    const transfer = /transfer ([0-9a-f]{32})/.exec(out)?.[1];
    expect(transfer).toBeDefined();
    distributed.push({ transfer: transfer ?? '', size: content.length });
    expect(out).toContain(`distributing build.bin (24.0 MiB, sha256 ${sha256(content).slice(0, 16)}`);
    expect(out).toContain('2 member(s), 0 offline');
    // Every update prints with --progress-interval 0; the last one is always at 100%.
    expect(out).toMatch(/^alice \([A-Z2-7]{7}\) {2}build\.bin {2}100% {2}24\.0 MiB of 24\.0 MiB {2}[\d.]+ \S+\/s {2}eta /m);
    for (const name of ['alice', 'bob']) expect(out).toMatch(new RegExp(`^✓ ${name} \\([A-Z2-7]{7}\\) build\\.bin delivered \\(from server [0-9.]+ (?:B|KiB|MiB), from peers [0-9.]+ (?:B|KiB|MiB), in `, 'm'));
    expect(out).toMatch(/^MEMBER +FILE +STATE +FROM SERVER +FROM PEERS +TIME +REASON$/m);
    expect(out).toMatch(/^alice \([A-Z2-7]{7}\) +build\.bin +delivered +[\d.]+ (?:B|KiB|MiB) +[\d.]+ (?:B|KiB|MiB) +[\d.]+m?s/m);
    expect(out).toContain('2 delivered, 0 pending, 0 failed');
    expect(out).not.toContain('\u001b[');
  });

  it('distribute on a terminal draws a progress bar per delivery, then the same summary', async () => {
    const { path, content } = await newFile('image.iso', 32 * 1024 * 1024);
    const { code, output } = await onTerminal([SERVER_BIN, 'distribute', 'Developers', path, '--state-dir', serverState]);
    expect(code, output).toBe(0);
    distributed.push({ transfer: /transfer ([0-9a-f]{32})/.exec(output)?.[1] ?? '', size: content.length });
    // A bar: the label, the file, the bar itself, percent, bytes, rate and ETA.
    expect(output).toMatch(/(alice|bob) \([A-Z2-7]{7}\) +image\.iso \[[█░]{20}\] \d+% .*[\d.]+ \S+\/s +eta \S+/);
    expect(output).toMatch(/✓ alice \([A-Z2-7]{7}\) image\.iso delivered/);
    expect(output).toMatch(/✓ bob \([A-Z2-7]{7}\) image\.iso delivered/);
    expect(output).toMatch(/MEMBER +FILE +STATE +FROM SERVER +FROM PEERS +TIME +REASON/);
    expect(output).toContain('2 delivered, 0 pending, 0 failed');
  });

  it('distribute --json prints one document for scripts', async () => {
    const { path, content } = await newFile('notes.txt', 4096);
    const result = await serverCli(['distribute', 'Developers', path, '--json']);
    expect(result.code, result.stderr).toBe(0);
    const doc = JSON.parse(result.stdout) as { exitCode: number; timedOut: boolean; transfers: Array<{ id: string; sha256: string; size: number }>; deliveries: Array<{ member: string; memberName: string; state: string; bytesSent: number; file: string }> };
    expect(doc.exitCode).toBe(0);
    expect(doc.timedOut).toBe(false);
    expect(doc.transfers).toHaveLength(1);
    expect(doc.transfers[0]?.sha256).toBe(sha256(content));
    distributed.push({ transfer: doc.transfers[0]?.id ?? '', size: content.length });
    expect(doc.deliveries.map((d) => d.member).sort()).toEqual([members.alice.id, members.bob.id].sort());
    for (const d of doc.deliveries) {
      expect(d).toMatchObject({ state: 'delivered', bytesSent: 4096, file: 'notes.txt' });
    }
  });

  it('--on-receive runs with the file described in its environment; a failing command keeps the file', async () => {
    const { transfer, size } = distributed[0] ?? { transfer: '', size: 0 };
    await members.alice.daemon!.waitForLog((l) => l.msg === 'on-receive command done' && l.transfer === transfer);
    const [file, group, sum, reportedSize, name] = (await readFile(join(hooks, transfer), 'utf8')).split('\n');
    expect(file).toBe(join(members.alice.downloads, 'Developers', 'build.bin'));
    expect(group).toBe('Developers');
    expect(name).toBe('build.bin');
    expect(reportedSize).toBe(String(size));
    expect(sum).toBe(sha256(await readFile(file ?? '')));

    const failed = await members.bob.daemon!.waitForLog((l) => l.msg === 'on-receive command failed; the file is kept' && l.transfer === transfer);
    expect(failed.exitCode).toBe(7);
    expect(failed.output).toBe('no luck');
    expect(sha256(await readFile(join(members.bob.downloads, 'Developers', 'build.bin')))).toBe(sum);
  });

  it('--on-receive commands that outlive their timeout are stopped, and the file stays', async () => {
    const { path, content } = await newFile('slow.txt', 100);
    const result = await serverCli(['distribute', 'Developers', path]);
    expect(result.code, result.stdout).toBe(0);
    distributed.push({ transfer: /transfer ([0-9a-f]{32})/.exec(result.stdout)?.[1] ?? '', size: content.length });
    const line = await members.bob.daemon!.waitForMsg('on-receive command timed out; the file is kept');
    expect(line).toMatchObject({ timeoutMs: 1000, signal: 'SIGTERM' });
    expect(await readFile(join(members.bob.downloads, 'Developers', 'slow.txt'))).toEqual(content);
  });

  it('status, groups and members: tables for people, JSON for scripts', async () => {
    const human = await serverCli(['status']);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toContain(`  id         ${serverId}`);
    expect(human.stdout).toContain(`  metrics    http://127.0.0.1:${metricsPort}/metrics`);
    expect(human.stdout).toMatch(/^Developers +closed +2 +2/m);
    expect(human.stdout).toMatch(/^MEMBER +NAME +ADDRESS +STATUS +JOINED +PENDING +FAILED +FROM SERVER +FROM PEERS$/m);
    expect(human.stdout).toMatch(/^[A-Z2-7]{7} +alice +127\.0\.0\.1 +online [\d.]+m?s +Developers +0 +0 +[\d.]+ (?:B|KiB|MiB) +[\d.]+ (?:B|KiB|MiB)$/m);
    expect(human.stdout).toMatch(/^TRANSFER +FILE +GROUP +SIZE +AGE +DELIVERED +PENDING +FAILED +FROM SERVER +FROM PEERS$/m);
    expect(human.stdout).toMatch(/^[0-9a-f]{12} +build\.bin +Developers +24\.0 MiB +\S+ +2 +0 +0 +[\d.]+ (?:B|KiB|MiB) +[\d.]+ (?:B|KiB|MiB)$/m);

    const status = JSON.parse((await serverCli(['status', '--json'])).stdout) as {
      server: { id: string; metrics: string; startedAt: number; configFile: string };
      groups: Array<{ name: string; members: number; online: number }>;
      members: Array<{ id: string; name: string; address: string; online: boolean; onlineSince: number | null; lastSeen: number; joined: string[]; pending: number; failed: number }>;
      transfers: Array<{ id: string; deliveries: Array<{ state: string }> }>;
    };
    expect(status.server).toMatchObject({ id: serverId, metrics: `127.0.0.1:${metricsPort}` });
    expect(status.groups).toEqual([expect.objectContaining({ name: 'Developers', members: 2, online: 2 })]);
    for (const m of Object.values(members)) {
      const row = status.members.find((r) => r.id === m.id);
      expect(row).toMatchObject({ name: m.name, address: '127.0.0.1', online: true, joined: ['Developers'], pending: 0, failed: 0 });
      expect(row?.onlineSince).toBeGreaterThanOrEqual(status.server.startedAt);
    }
    expect(status.transfers.map((t) => t.id).sort()).toEqual(distributed.map((d) => d.transfer).sort());

    const groups = await serverCli(['groups']);
    expect(groups.stdout).toMatch(/^GROUP +ACCESS +MEMBERS +ONLINE +DESCRIPTION\nDevelopers +closed +2 +2$/m);
    const membersHuman = await serverCli(['members']);
    expect(membersHuman.stdout).toMatch(/^MEMBER +NAME +ADDRESS +STATUS +JOINED +ALLOWED IN +PENDING +FAILED$/m);
    expect(membersHuman.stdout).toContain(members.alice.id);
    const membersJson = JSON.parse((await serverCli(['members', '--json'])).stdout) as Array<{ id: string }>;
    expect(membersJson.map((m) => m.id).every((id) => ID.test(id))).toBe(true);
  });

  it('group-client status shows the server, the joined groups and the recent files', async () => {
    const human = await h.run(CLIENT_BIN, ['status', '--state-dir', members.alice.state]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/^group-client alice {2}running \(pid \d+, up /m);
    expect(human.stdout).toContain(`  server     `);
    expect(human.stdout).toContain(serverId);
    expect(human.stdout).toMatch(/^ {2}link {7}connected /m);
    expect(human.stdout).toMatch(/^Developers +joined +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d *$/m);
    expect(human.stdout).toContain(`RECENT FILES (${distributed.length} of ${distributed.length})`);
    expect(human.stdout).toContain(join(members.alice.downloads, 'Developers', 'slow.txt'));

    const report = JSON.parse((await h.run(CLIENT_BIN, ['status', '--state-dir', members.alice.state, '--json', '--recent', '2'])).stdout) as {
      running: boolean; received: number;
      status: { id: string; server: { id: string }; groups: Array<{ name: string; state: string }> };
      recent: Array<{ transfer: string; name: string; sha256: string }>;
    };
    expect(report.running).toBe(true);
    expect(report.status.id).toBe(members.alice.id);
    expect(report.status.server.id).toBe(serverId);
    expect(report.status.groups).toEqual([{ name: 'Developers', state: 'joined', reason: '', since: expect.any(Number), refusal: null }]);
    expect(report.received).toBe(distributed.length);
    expect(report.recent.map((r) => r.transfer)).toEqual(distributed.slice(-2).reverse().map((d) => d.transfer));
  });

  it('the metrics endpoint counts what happened', async () => {
    const response = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    expect(response.headers.get('content-type')).toContain('text/plain');
    const metrics = parseMetrics(await response.text());
    const delivered = distributed.length * 2;
    expect(metrics.get('groupcast_deliveries{state="delivered"}')).toBe(delivered);
    expect(metrics.get('groupcast_deliveries{state="pending"}')).toBe(0);
    expect(metrics.get('groupcast_deliveries{state="failed"}')).toBe(0);
    expect(metrics.get('groupcast_bytes_sent_total')).toBe(2 * distributed.reduce((sum, d) => sum + d.size, 0));
    expect(metrics.get('groupcast_transfer_errors_total')).toBe(0);
    expect(metrics.get('groupcast_members_online')).toBe(2);
    expect(metrics.get('groupcast_joins_total')).toBe(2);
    expect(metrics.get('groupcast_control_requests_total{type="join"}')).toBeGreaterThanOrEqual(2);
    expect(metrics.get('groupcast_connections_total{result="admitted"}')).toBeGreaterThanOrEqual(2);
    expect(metrics.get('groupcast_datagrams_received_total')).toBeGreaterThanOrEqual(4);
    expect(metrics.get('groupcast_datagrams_sent_total')).toBeGreaterThanOrEqual(4);
    expect(metrics.has('process_resident_memory_bytes')).toBe(true);
    expect((await fetch(`http://127.0.0.1:${metricsPort}/other`)).status).toBe(404);
  });

  it("a member's metrics count the files it received and its --on-receive results", async () => {
    // Every file but slow.txt made bob's command fail; slow.txt timed out. Wait until each has ended.
    for (const { transfer } of distributed) {
      await members.bob.daemon!.waitForLog((l) => l.component === 'on-receive' && l.transfer === transfer);
    }
    const metrics = parseMetrics(await (await fetch(`http://127.0.0.1:${memberMetricsPort}/metrics`)).text());
    expect(metrics.get('groupcast_files_received_total')).toBe(distributed.length);
    expect(metrics.get('groupcast_bytes_received_total')).toBe(distributed.reduce((sum, d) => sum + d.size, 0));
    expect(metrics.get('groupcast_on_receive_total{result="failed"}')).toBe(distributed.length - 1);
    expect(metrics.get('groupcast_on_receive_total{result="timeout"}')).toBe(1);
    expect(metrics.get('groupcast_server_connected')).toBe(1);
    expect(metrics.get('groupcast_datagrams_received_total')).toBeGreaterThanOrEqual(1);
  });

  it('a member that is offline: distribute exits 3, status and members show it pending, its own status says not running', async () => {
    await members.bob.daemon!.stop();
    await server.waitForMsg('member offline', { member: members.bob.id });
    const { path } = await newFile('late.txt', 1000);
    const result = await serverCli(['distribute', 'Developers', path]);
    expect(result.code, result.stdout + result.stderr).toBe(3);
    expect(result.stdout).toMatch(/2 member\(s\), 1 offline: bob \([A-Z2-7]{7}\)/);
    expect(result.stdout).toMatch(/^bob \([A-Z2-7]{7}\) +late\.txt +pending +0 B +0 B +member offline$/m);
    expect(result.stdout).toContain('1 delivered, 1 pending, 0 failed');

    const list = JSON.parse((await serverCli(['members', '--json'])).stdout) as Array<{ id: string; online: boolean; onlineSince: number | null; lastSeen: number; pending: number }>;
    expect(list.find((m) => m.id === members.bob.id)).toMatchObject({ online: false, onlineSince: null, pending: 1 });
    const human = await serverCli(['members']);
    expect(human.stdout).toMatch(new RegExp(`^${members.bob.id} +bob +127\\.0\\.0\\.1 +offline, seen [\\d.]+m?s ago +Developers +Developers +1 +0$`, 'm'));
    const metrics = parseMetrics(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text());
    expect(metrics.get('groupcast_deliveries{state="pending"}')).toBe(1);
    expect(metrics.get('groupcast_members_online')).toBe(1);

    const bobStatus = await h.run(CLIENT_BIN, ['status', '--state-dir', members.bob.state]);
    expect(bobStatus.code).toBe(3);
    expect(bobStatus.stdout).toMatch(/^group-client bob {2}NOT RUNNING \(last update /m);
  });
});
