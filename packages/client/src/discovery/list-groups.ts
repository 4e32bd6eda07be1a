import type { RemoteInfo } from 'node:dgram';
import {
  backoffDelay, RateLimitedLog,
  type ControlEndpoint, type Datagram, type GroupInfo, type Logger, type Peer, type PeerId,
} from '@groupcast/shared';
import { ListRequests } from './list-requests.js';

export interface GroupListing {
  server: { id: PeerId; name: string | undefined; address: string; tcpPort: number; pinned: boolean };
  groups: GroupInfo[];
}

export interface ListGroupsOptions {
  log: Logger;
  /** An open endpoint; the caller closes it. */
  endpoint: ControlEndpoint;
  /** If set, only this server's answers count. */
  pinned: PeerId | undefined;
  unicast: Peer | undefined;
  timeoutMs: number;
}

interface Pages {
  total: number;
  got: Map<number, GroupInfo[]>;
  address: string;
  tcpPort: number;
}

const LIST_BASE_MS = 250;
const LIST_CAP_MS = 1_000;

/**
 * Asks for the group list and collects every GROUPS page of one answer from the first server that
 * replies (the pinned one, if a pin exists). An ANNOUNCE heard meanwhile names the server and is
 * asked directly too. Resolves undefined if no complete answer came in time.
 */
export function listGroups(options: ListGroupsOptions): Promise<GroupListing | undefined> {
  const { endpoint, pinned, unicast, timeoutMs } = options;
  const limited = new RateLimitedLog(options.log);
  const requests = new ListRequests(endpoint);
  const answers = new Map<string, Pages>();
  const names = new Map<PeerId, string>();
  let chosen: PeerId | undefined;
  let attempt = 0;
  let retryTimer: NodeJS.Timeout | undefined;

  return new Promise((resolve) => {
    const ask = (to?: Peer): void => requests.send(to);
    const retry = (): void => {
      ask();
      if (unicast) ask(unicast);
      retryTimer = setTimeout(retry, backoffDelay(attempt++, LIST_BASE_MS, LIST_CAP_MS));
    };
    const finish = (listing: GroupListing | undefined): void => {
      clearTimeout(retryTimer);
      clearTimeout(deadline);
      endpoint.off('message', onMessage);
      resolve(listing);
    };
    const onMessage = ({ sender, message }: Datagram, from: RemoteInfo): void => {
      if (message.type !== 'announce' && message.type !== 'groups' && message.type !== 'cookie') return;
      if (pinned && sender !== pinned) {
        limited.warn(`other:${sender}`, { server: sender, pinned }, 'ignoring a server that is not the pinned one');
        return;
      }
      if (message.type === 'announce') {
        names.set(sender, message.name);
        if (!chosen) ask({ address: from.address, port: from.port });
        return;
      }
      if (chosen && chosen !== sender) return;
      if (message.type === 'cookie') {
        requests.answer(message, from);
        return;
      }
      const key = message.request.toString('hex');
      if (!requests.has(message.request)) return;
      chosen = sender;
      const pages = answers.get(key) ?? { total: message.pages, got: new Map(), address: from.address, tcpPort: message.tcpPort };
      answers.set(key, pages);
      if (pages.total !== message.pages) return;
      pages.got.set(message.page, message.groups);
      if (pages.got.size < pages.total) return;
      const groups = [...pages.got.entries()].sort(([a], [b]) => a - b).flatMap(([, list]) => list);
      finish({
        server: { id: sender, name: names.get(sender), address: pages.address, tcpPort: pages.tcpPort, pinned: sender === pinned },
        groups,
      });
    };
    const deadline = setTimeout(() => finish(undefined), timeoutMs);
    endpoint.on('message', onMessage);
    retry();
  });
}
