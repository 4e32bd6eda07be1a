import { Metrics, type ControlEndpoint } from '@groupcast/shared';
import type { ControlPlane } from './control/control-plane.js';
import type { DataPlane } from './delivery/data-plane.js';
import type { Distributor } from './delivery/distributor.js';
import type { MemberSession } from './delivery/member-session.js';
import type { Membership } from './control/membership.js';
import type { DeliveryState, Outbox } from './delivery/outbox.js';

const STATES: DeliveryState[] = ['pending', 'sending', 'delivered', 'failed'];

/**
 * The server's Prometheus metrics (`--metrics`). Counts the components already keep are read at
 * scrape time; the few events nobody counts (bytes on the wire, failed attempts, joins) are counted
 * here from the components' events.
 */
export class ServerMetrics extends Metrics {
  private readonly bytesSent = this.incrementer('groupcast_bytes_sent_total', 'File bytes sent to members (DATA payload, every attempt).');
  private readonly transferErrors = this.incrementer('groupcast_transfer_errors_total', 'Delivery attempts that ended without a verified delivery (retried or failed).');
  private readonly joins = this.incrementer('groupcast_joins_total', 'Members that joined a group (not counting repeats of a join already held).');
  private readonly sending = new Set<string>();

  /** Counts the bytes a member session sends. */
  watchSession(session: MemberSession): void {
    session.on('progress', (_transfer, _position, bytes) => this.bytesSent.inc(bytes));
  }

  register(parts: { endpoint: ControlEndpoint; dataPlane: DataPlane; controlPlane: ControlPlane; membership: Membership; outbox: Outbox; distributor: Distributor }): void {
    const { endpoint, dataPlane, controlPlane, membership, outbox, distributor } = parts;
    this.counter('groupcast_datagrams_received_total', 'Control-plane datagrams received, valid or not.', () => endpoint.counters.received);
    this.counter('groupcast_datagrams_sent_total', 'Control-plane datagrams sent.', () => endpoint.counters.sent);
    this.counterBy('groupcast_datagrams_dropped_total', 'Datagrams dropped, by reason (an error code).', 'reason', () => endpoint.counters.dropped);
    this.counterBy('groupcast_control_requests_total', 'LIST, JOIN and LEAVE requests answered.', 'type', () => ({
      list: controlPlane.counters.lists, join: controlPlane.counters.joins, leave: controlPlane.counters.leaves,
    }));
    this.counter('groupcast_control_refusals_total', 'JOIN or LEAVE requests refused (NAK).', () => controlPlane.counters.naks);
    this.counter('groupcast_control_cookies_total', 'LISTs without a valid cookie, answered with a COOKIE.', () => controlPlane.counters.cookies);
    this.counter('groupcast_control_rate_limited_total', 'LIST, JOIN and LEAVE requests dropped over the per-source rate.', () => controlPlane.counters.limited);
    this.counterBy('groupcast_open_members_total', 'Open-group joins refused at the cap, and idle members expired.', 'event', () => ({
      full: membership.counters.full, expired: membership.counters.expired,
    }));
    this.counterBy('groupcast_connections_total', 'Data connections, by whether they were admitted.', 'result', () => ({
      admitted: dataPlane.counters.admitted, refused: dataPlane.counters.refused,
    }));
    this.gauge('groupcast_members_online', 'Members with a data connection now.', () => membership.listMembers().filter((m) => m.online).length);
    this.counter('groupcast_peer_bytes_total', 'File bytes members took from their peers instead of the server (pieces they reported that the server had not sent them).', () => distributor.swarm.peerBytes);
    this.gauge('groupcast_swarm_members', 'Members taking part in a transfer\'s swarm now (pulling, or finished and still listed as a source).', () => distributor.swarm.members);
    this.gaugeBy('groupcast_deliveries', 'Deliveries in the outbox, by state.', 'state', () => {
      const counts = Object.fromEntries(STATES.map((state) => [state, 0])) as Record<DeliveryState, number>;
      for (const delivery of outbox.allDeliveries()) counts[delivery.state]++;
      return counts;
    });
    membership.on('joined', () => this.joins.inc());
    distributor.on('delivery', (delivery) => {
      const key = `${delivery.transfer}/${delivery.member}`;
      if (delivery.state === 'sending') {
        this.sending.add(key);
        return;
      }
      if (!this.sending.delete(key)) return;
      if (delivery.state !== 'delivered') this.transferErrors.inc();
    });
  }
}
