import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_BIN, harness, SERVER_BIN, testPort } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { parseMetrics } from '../support/metrics.js';
import { Cluster, finalPath, MiB, waitUntil, writeRandomFile, type Member } from '../durability/cluster.js';

/**
 * Where a pulled delivery's bytes came from, as the operator and the member see it: status --json and
 * distribute per member (server bytes + peer bytes = the file), the progress of a pulled delivery (what
 * the member holds, from anyone, up to 100%), the server's and the members' metrics, group-client status.
 */
const h = harness();
const c = new Cluster(h, { peers: true });
const GROUP = 'Developers';
const SIZE = 16 * MiB;
/** The piece size of a 16 MiB file (the smallest): a piece fetched from two sources at the very end is the most a figure may be over. */
const PIECE = 256 * 1024;
const serverMetrics = testPort();
let members: Member[];
const memberMetrics = new Map<string, number>();

interface Delivery { member: string; bytesSent: number; bytesFromPeers: number; state: string }

const scrape = async (port: number): Promise<Map<string, number>> => parseMetrics(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());

beforeAll(async () => {
  members = [];
  for (let i = 0; i < 3; i++) members.push(await c.member(`v${i}`, [GROUP]));
  await c.startServer([{ name: GROUP, members }], ['--metrics', `127.0.0.1:${serverMetrics}`]);
  for (const [i, m] of members.entries()) {
    const port = serverMetrics + 1 + i;
    memberMetrics.set(m.id, port);
    m.daemon = h.spawn(m.name, CLIENT_BIN, [
      '--join', GROUP, '--server-id', c.serverId, '--state-dir', m.state, '--downloads', m.downloads, '--name', m.name,
      ...c.network, '--peer-port', '0', '--metrics', `127.0.0.1:${port}`,
    ]);
  }
  for (const m of members) await c.online(m);
});

afterAll(() => h.cleanup());

describe('a swarm, made visible', () => {
  it('status --json and distribute --json: per member, bytes from the server and from peers add up to the file; the metrics agree', async () => {
    const file = join(await h.dir('source'), 'visible.bin');
    const sha256 = await writeRandomFile(file, SIZE);
    const ran = await c.distribute(GROUP, [file], ['--json']);
    expect(ran.code, ran.stdout + ran.stderr).toBe(0);
    for (const m of members) expect(await sha256File(finalPath(m, GROUP, 'visible.bin'))).toBe(sha256);

    const summary = JSON.parse(ran.stdout) as { deliveries: Delivery[] };
    const status = JSON.parse((await h.run(SERVER_BIN, ['status', '--json', '--state-dir', c.serverState])).stdout) as {
      transfers: Array<{ deliveries: Delivery[] }>;
      members: Array<{ id: string; bytesFromServer: number; bytesFromPeers: number }>;
    };
    const deliveries = status.transfers[0]!.deliveries;
    expect(deliveries).toHaveLength(3);
    for (const d of deliveries) {
      expect(d.state).toBe('delivered');
      expect(d.bytesSent + d.bytesFromPeers, d.member).toBeGreaterThanOrEqual(SIZE);
      expect(d.bytesSent + d.bytesFromPeers, d.member).toBeLessThanOrEqual(SIZE + 2 * PIECE);
      // distribute --json reports the same figures as status.
      expect(summary.deliveries.find((s) => s.member === d.member)).toMatchObject({ bytesSent: d.bytesSent, bytesFromPeers: d.bytesFromPeers });
      expect(status.members.find((m) => m.id === d.member)).toMatchObject({ bytesFromServer: d.bytesSent, bytesFromPeers: d.bytesFromPeers });
    }
    const sent = deliveries.reduce((sum, d) => sum + d.bytesSent, 0);
    const fromPeers = deliveries.reduce((sum, d) => sum + d.bytesFromPeers, 0);
    // The swarm worked: most of the three copies came from peers.
    expect(fromPeers).toBeGreaterThan(SIZE);

    const server = await scrape(serverMetrics);
    expect(server.get('groupcast_bytes_sent_total')).toBe(sent);
    expect(server.get('groupcast_peer_bytes_total')).toBe(fromPeers);
    expect(server.get('groupcast_swarm_members')).toBe(3);

    let served = 0;
    let keptFromPeers = 0;
    for (const m of members) {
      const metrics = await scrape(memberMetrics.get(m.id)!);
      const fromServer = metrics.get('groupcast_piece_bytes_received_total{source="server"}')!;
      const peers = metrics.get('groupcast_piece_bytes_received_total{source="peers"}')!;
      // Each piece is counted once, from where it was kept.
      expect(fromServer + peers, m.name).toBe(SIZE);
      // The server counted what it sent; the member what it kept (a piece that came twice, once).
      expect(fromServer, m.name).toBeLessThanOrEqual(deliveries.find((d) => d.member === m.id)!.bytesSent);
      expect(metrics.get('groupcast_bad_pieces_total'), m.name).toBe(0);
      // Linked to both others while it pulled; once both ends of a link hold everything, the link goes.
      expect(metrics.get('groupcast_peer_connections_total{result="dialed"}')! + metrics.get('groupcast_peer_connections_total{result="accepted"}')!, m.name).toBeGreaterThanOrEqual(2);
      await waitUntil(async () => (await scrape(memberMetrics.get(m.id)!)).get('groupcast_peer_links') === 0, `${m.name}'s finished links closing`, 10_000, 100);
      served += metrics.get('groupcast_peer_bytes_served_total')!;
      keptFromPeers += peers;
    }
    expect(keptFromPeers).toBeGreaterThanOrEqual(fromPeers);
    expect(served).toBeGreaterThanOrEqual(keptFromPeers);

    // group-client status: the peer port, links and the same counts (status.json follows within a second or so).
    for (const m of members) {
      const metrics = await scrape(memberMetrics.get(m.id)!);
      let peers: { port: number; links: number; fromServer: number; fromPeers: number; toPeers: number; badPieces: number } | undefined;
      let badPeers: { count: number } | undefined;
      await waitUntil(async () => {
        ({ peers, badPeers } = JSON.parse(await readFile(join(m.state, 'status.json'), 'utf8')) as { peers: typeof peers; badPeers: typeof badPeers });
        return peers !== undefined && peers.fromPeers === metrics.get('groupcast_piece_bytes_received_total{source="peers"}')
          && peers.toPeers === metrics.get('groupcast_peer_bytes_served_total') && peers.links === 0;
      }, `${m.name}'s status.json catching up with its metrics`, 10_000, 100);
      expect(peers!.port).toBeGreaterThan(0);
      expect(peers!.links).toBe(0);
      expect(peers!.badPieces).toBe(0);
      expect(badPeers?.count).toBe(0);
      const text = await h.run(CLIENT_BIN, ['status', '--state-dir', m.state]);
      expect(text.stdout).toMatch(new RegExp(`peers +port ${peers!.port}, 0 link\\(s\\) open; from server [0-9.]+ (?:B|KiB|MiB), from peers [0-9.]+ (?:B|KiB|MiB), served to peers`));
    }
    expect(await c.statusText()).toMatch(/FROM SERVER +FROM PEERS/);
  });

  it('distribute shows a pulled delivery\'s progress as what the member holds, from anyone, up to 100%', async () => {
    const file = join(await h.dir('source'), 'progress.bin');
    await writeRandomFile(file, SIZE);
    // Slowed by a rate of its own so that progress is reported along the way, not only at the end.
    const ran = await c.distribute(GROUP, [file], ['--progress-interval', '0', '--rate', '12M']);
    expect(ran.code, ran.stdout + ran.stderr).toBe(0);
    for (const m of members) {
      const lines = ran.stdout.split('\n').filter((line) => line.startsWith(`${m.name} (`) && line.includes('progress.bin'));
      expect(lines.some((line) => / 100% {2}16\.0 MiB of 16\.0 MiB .* from server [0-9.]+ (?:B|KiB|MiB), from peers [0-9.]+ (?:B|KiB|MiB)$/.test(line)), `${m.name}:\n${lines.join('\n')}`).toBe(true);
      expect(ran.stdout).toMatch(new RegExp(`^✓ ${m.name} \\([A-Z2-7]{7}\\) progress\\.bin delivered \\(from server [0-9.]+ (?:B|KiB|MiB), from peers [0-9.]+ (?:B|KiB|MiB), in `, 'm'));
    }
    // Progress moved with pieces from peers too: some line shows more held than the server could have sent that member.
    expect(ran.stdout).toMatch(/from peers [1-9]/);
  });
});
