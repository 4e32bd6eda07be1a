import type { EventEmitter } from 'node:events';
import { Metrics, OUTCOME_NAMES, type ControlEndpoint } from '@groupcast/shared';
import type { ClientEvents } from './daemon.js';
import type { OnReceive } from './receive/on-receive.js';
import type { PeerNode } from './peer/peer-node.js';
import type { SwarmCounters } from './peer/swarm.js';

/**
 * The member's Prometheus metrics (`--metrics`): the control plane's datagram counts, read at scrape
 * time, and files in, counted from the daemon's events.
 */
export class ClientMetrics extends Metrics {
  private readonly filesReceived = this.incrementer('groupcast_files_received_total', 'Files received, verified and placed.');
  private readonly bytesReceived = this.incrementer('groupcast_bytes_received_total', 'Bytes of the files received.');
  private readonly notReceived = new Map<string, number>();
  private readonly hooks = new Map<string, number>();
  private connected = 0;

  constructor(
    endpoint: ControlEndpoint, client: EventEmitter<ClientEvents>, onReceive: OnReceive | undefined,
    peers?: { node: PeerNode; counters: SwarmCounters },
  ) {
    super();
    if (peers) this.peerMetrics(peers.node, peers.counters);
    this.counter('groupcast_datagrams_received_total', 'Control-plane datagrams received, valid or not.', () => endpoint.counters.received);
    this.counter('groupcast_datagrams_sent_total', 'Control-plane datagrams sent.', () => endpoint.counters.sent);
    this.counterBy('groupcast_datagrams_dropped_total', 'Datagrams dropped, by reason (an error code).', 'reason', () => endpoint.counters.dropped);
    this.counterBy('groupcast_transfer_errors_total', 'Offers declined or transfers that failed here, by outcome.', 'outcome', () => Object.fromEntries(this.notReceived));
    this.counterBy('groupcast_on_receive_total', 'On-receive command runs, by result.', 'result', () => Object.fromEntries(this.hooks));
    this.gauge('groupcast_server_connected', '1 while the data connection to the server is up.', () => this.connected);
    client.on('received', (event) => {
      this.filesReceived.inc();
      this.bytesReceived.inc(event.size);
    });
    const count = (map: Map<string, number>, key: string): void => {
      map.set(key, (map.get(key) ?? 0) + 1);
    };
    for (const kind of ['declined', 'failed'] as const) client.on(kind, (event) => count(this.notReceived, OUTCOME_NAMES[event.outcome]));
    client.on('connected', () => {
      this.connected = 1;
    });
    client.on('disconnected', () => {
      this.connected = 0;
    });
    onReceive?.on('done', (_event, result) => count(this.hooks, result));
  }

  /** Peer-assisted delivery: piece bytes by source, bytes served, bad pieces, links (read at scrape time). */
  private peerMetrics(node: PeerNode, counters: SwarmCounters): void {
    this.counterBy('groupcast_piece_bytes_received_total', 'Bytes of verified pieces kept, by source (server or peers); a piece fetched twice counts once.', 'source', () => ({
      server: counters.fromServer, peers: counters.fromPeers,
    }));
    this.counter('groupcast_peer_bytes_served_total', 'Bytes of pieces served to other members.', () => counters.toPeers);
    this.counter('groupcast_bad_pieces_total', 'Pieces from peers whose hash did not match the manifest (the peer is dropped for that transfer).', () => counters.badPieces);
    this.gauge('groupcast_peer_links', 'Peer links open now, over every transfer.', () => node.links);
    this.counterBy('groupcast_peer_connections_total', 'Peer connections dialed, accepted, and refused (not listed by the server, or over the handshake cap).', 'result', () => ({ ...node.counters }));
  }
}
