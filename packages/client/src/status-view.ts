import { formatBytes, formatDuration, formatTable, printable } from '@groupcast/shared';
import type { ClientStatus, StatusReport } from './status-file.js';

const time = (ms: number): string => new Date(ms).toISOString().replace('T', ' ').slice(0, 19);

/** Peer-assisted delivery: the port and links, bytes by source (the peers dropped for a bad piece have their own table). */
function peerLines(peers: ClientStatus['peers']): string[] {
  if (peers === undefined) return [];
  if (peers === null) return ['  peers      off (--no-peers): every file from the server'];
  return [
    `  peers      port ${peers.port}, ${peers.links} link(s) open; from server ${formatBytes(peers.fromServer)}, from peers ${formatBytes(peers.fromPeers)}, `
      + `served to peers ${formatBytes(peers.toPeers)}; ${peers.badPieces} bad piece(s)`,
  ];
}

/** GROUP, STATE, SINCE, REASON: a refusal shows its kind and the server's words. */
function groupRows(groups: ClientStatus['groups']): string[][] {
  return groups.map((g) => [
    g.name,
    g.state,
    g.since === undefined ? '' : time(g.since),
    g.refusal ? `${g.refusal.reason}: ${printable(g.refusal.message)}` : printable(g.reason),
  ]);
}

/** `group-client status` for people. Everything that came from the wire goes through printable(). */
export function statusText(report: StatusReport, now: number): string {
  const { status, running, recent } = report;
  const state = running
    ? `running (pid ${status.pid}, up ${formatDuration(now - status.startedAt)})`
    : `NOT RUNNING (last update ${time(status.updatedAt)} UTC${status.running ? ', it did not stop cleanly' : ''})`;
  const refused = status.groups.some((g) => g.refusal);
  const server = status.server
    ? `${printable(status.server.name ?? '(name not announced yet)')}  ${status.server.id}  ${status.server.address}:${status.server.tcpPort}`
    : refused ? 'none pinned: the server refused (see GROUP below)' : 'not found yet (check --interface, or name it with --server HOST)';
  const link = !running ? '' : status.connectedSince === null ? 'not connected' : `connected ${formatDuration(now - status.connectedSince)}`;
  const lines = [
    `group-client ${printable(status.name)}  ${state}`,
    ...(!running && status.stopReason ? [`  stopped    ${status.stopReason}`] : []),
    `  id         ${status.id}`,
    `  server     ${server}`,
    ...(link ? [`  link       ${link}`] : []),
    `  downloads  ${status.downloads}`,
    ...peerLines(status.peers),
    '',
    status.groups.length === 0
      ? 'no groups to join (--join <group>)'
      : formatTable(['GROUP', 'STATE', 'SINCE (UTC)', 'REASON'], groupRows(status.groups)),
    '',
  ];
  if (recent.length === 0) lines.push('no files received yet');
  else {
    lines.push(`RECENT FILES (${recent.length} of ${report.received})`);
    lines.push(formatTable(
      ['RECEIVED (UTC)', 'GROUP', 'SIZE', 'SHA256', 'PATH'],
      recent.map((r) => [r.time.replace('T', ' ').slice(0, 19), printable(r.group), formatBytes(r.size), `${r.sha256.slice(0, 12)}…`, printable(r.kind === 'tree' ? `${r.path}/ (${r.files ?? 0} files)` : r.path)]),
    ));
  }
  if (status.problems.length > 0) {
    lines.push('', 'RECENT PROBLEMS');
    lines.push(formatTable(
      ['WHEN (UTC)', 'GROUP', 'FILE', 'OUTCOME', 'MESSAGE'],
      status.problems.slice().reverse().map((p) => [time(p.time), printable(p.group), printable(p.name), p.outcome, printable(p.message)]),
    ));
  }
  const badPeers = status.badPeers;
  if (badPeers && badPeers.count > 0) {
    lines.push('', `PEERS DROPPED FOR BAD PIECES (${badPeers.count} since start)`);
    lines.push(formatTable(
      ['WHEN (UTC)', 'PEER', 'GROUP', 'FILE', 'PIECE'],
      badPeers.recent.slice().reverse().map((b) => [time(b.time), b.peer, printable(b.group), printable(b.name), String(b.piece)]),
    ));
  }
  return lines.join('\n');
}
