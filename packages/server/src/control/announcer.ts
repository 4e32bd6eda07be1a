import { randomBytes } from 'node:crypto';
import {
  ANNOUNCE_INTERVAL_MS, datagramLength, INSTANCE_LENGTH, MAX_DATAGRAM,
  type ControlEndpoint, type ControlMessage, type GroupInfo,
} from '@groupcast/shared';

/** As many group names as fit in one datagram; the count tells members whether to ask for the rest. */
function announcement(name: string, instance: Buffer, tcpPort: number, groups: GroupInfo[]): ControlMessage {
  const message = { type: 'announce' as const, name, instance, tcpPort, groupCount: groups.length, groups: [] as string[] };
  for (const group of groups) {
    message.groups.push(group.name);
    if (message.groups.length > 255 || datagramLength(message) > MAX_DATAGRAM) {
      message.groups.pop();
      break;
    }
  }
  return message;
}

/**
 * Announces the server on start and every few seconds. The instance id changes on every start, so
 * members notice a restart and join again.
 */
export class Announcer {
  readonly instance = randomBytes(INSTANCE_LENGTH);
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: {
      endpoint: ControlEndpoint;
      name: string;
      tcpPort: () => number;
      groups: () => GroupInfo[];
      intervalMs?: number;
    },
  ) {}

  start(): void {
    this.announce();
    this.timer = setInterval(() => this.announce(), this.options.intervalMs ?? ANNOUNCE_INTERVAL_MS);
    this.timer.unref();
  }

  announce(): void {
    const { endpoint, name, tcpPort, groups } = this.options;
    endpoint.send(announcement(name, this.instance, tcpPort(), groups()));
  }

  close(): void {
    clearInterval(this.timer);
  }
}
