import { resolve } from 'node:path';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import {
  createLogger, defaultStateDir, ErrorCode, formatTable, isGroupcastError, loadOrCreateIdentity, parseDuration,
  ensurePrivateDir, type LogFormat,
} from '@groupcast/shared';
import { loadConfigFile, resolveSettings, type ConfigFile, type ServerSettings } from './config.js';
import { callDaemon } from './control-socket.js';
import { startServer } from './daemon.js';
import { runDistribute, type DistributeFlags } from './distribute-view.js';

/** Exit codes the operator's scripts can rely on. */
export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, PENDING: 3, NO_MEMBERS: 4 } as const;

interface CommonFlags {
  config?: string;
  stateDir?: string;
  interface?: string;
  groupAddress?: string;
  port?: number;
  tcpPort?: number;
  concurrency?: number;
  name?: string;
  logLevel?: ServerSettings['logLevel'];
  logFormat?: LogFormat;
  keep?: string;
  json?: boolean;
}

async function settingsFrom(flags: CommonFlags): Promise<ServerSettings> {
  const file: ConfigFile = flags.config ? await loadConfigFile(resolve(flags.config)) : {};
  return resolveSettings(file, {
    name: flags.name,
    stateDir: flags.stateDir,
    interface: flags.interface,
    groupAddress: flags.groupAddress,
    port: flags.port,
    tcpPort: flags.tcpPort,
    concurrency: flags.concurrency,
    logLevel: flags.logLevel,
  }, defaultStateDir('server'));
}

async function start(flags: CommonFlags): Promise<void> {
  const settings = await settingsFrom(flags);
  const log = createLogger({ name: 'group-server', level: settings.logLevel, format: flags.logFormat });
  const server = await startServer({ ...settings, keepMs: parseDuration(flags.keep ?? '7d') }, log);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    const deadline = setTimeout(() => {
      log.error('shutdown took too long; exiting');
      process.exit(EXIT.FAILED);
    }, 10_000);
    deadline.unref();
    server.close().then(() => process.exit(EXIT.OK), (err: unknown) => {
      log.error({ err }, 'shutdown failed');
      process.exit(EXIT.FAILED);
    });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

function print(json: boolean | undefined, value: unknown, human: () => string): void {
  process.stdout.write(`${json ? JSON.stringify(value, null, 2) : human()}\n`);
}

function common<T>(argv: Argv<T>) {
  return argv
    .option('config', { type: 'string', describe: 'JSON config file (keys as these flags in camelCase, plus "groups")' })
    .option('state-dir', { type: 'string', describe: `state directory [default: ${defaultStateDir('server')}]` })
    .option('log-level', { choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, describe: 'log level [default: info]' })
    .option('log-format', { choices: ['json', 'pretty'] as const, describe: 'log format [default: pretty on a terminal, else json]' })
    .option('json', { type: 'boolean', describe: 'machine-readable output' });
}

function network<T>(argv: Argv<T>) {
  return argv
    .option('interface', { type: 'string', describe: 'multicast interface (address or name) [default: first non-loopback]' })
    .option('group-address', { type: 'string', describe: 'multicast group [default: 239.255.77.77]' })
    .option('port', { type: 'number', describe: 'UDP control port [default: 47700]' })
    .option('tcp-port', { type: 'number', describe: 'TLS data port [default: 47701]' })
    .option('concurrency', { type: 'number', describe: 'transfers in flight at once [default: 8]' })
    .option('name', { type: 'string', describe: 'server name in announcements [default: host name]' })
    .option('keep', { type: 'string', describe: 'how long undelivered files wait for offline members [default: 7d]' });
}

async function stateDirOf(flags: CommonFlags): Promise<string> {
  return (await settingsFrom(flags)).stateDir;
}

interface MemberRow { id: string; name: string; address: string; online: boolean; joined: string[]; allowedIn: string[]; lastSeen: number }
interface GroupRow { name: string; description: string; open: boolean; members: number; online: number }

const cli = yargs(hideBin(process.argv))
  .scriptName('group-server')
  .env('GROUPCAST')
  .strict()
  .usage('$0 [command]\n\nAnnounces groups on the LAN and pushes files to their members.')
  .command(['start', '$0'], 'run the server daemon', (y) => network(common(y)), (flags) => start(flags as CommonFlags))
  .command(
    'distribute <group> <files..>',
    'send files to every member of a group (talks to the running daemon)',
    (y) => common(y)
      .positional('group', { type: 'string', demandOption: true })
      .positional('files', { type: 'string', array: true, demandOption: true })
      .option('wait-all', { type: 'boolean', describe: 'also wait for members that are offline now' })
      .option('timeout', { type: 'string', describe: 'stop waiting after this long (e.g. 10m)' })
      .example('$0 distribute Developers ./build.tar.gz', 'push a file to every member of Developers')
      .example('$0 distribute Designers a.psd b.psd --wait-all --timeout 1h', 'wait up to an hour for offline members'),
    async (flags) => {
      const options: DistributeFlags = {
        group: flags.group,
        files: flags.files.map((file) => resolve(file)),
        waitAll: flags.waitAll ?? false,
        json: flags.json ?? false,
        ...(flags.timeout ? { timeoutMs: parseDuration(flags.timeout) } : {}),
      };
      process.exitCode = await runDistribute(await stateDirOf(flags as CommonFlags), options);
    },
  )
  .command('status', 'show groups, members and transfers', (y) => common(y), async (flags) => {
    const status = await callDaemon<{ server: Record<string, unknown>; groups: GroupRow[]; members: MemberRow[]; transfers: Array<{ id: string; name: string; group: string; deliveries: Array<{ state: string }> }> }>(await stateDirOf(flags as CommonFlags), 'status', {});
    print(flags.json, status, () => [
      `server ${String(status.server.name)}  id ${String(status.server.id)}`,
      `  interface ${String(status.server.interface)}  group ${String(status.server.groupAddress)}:${String(status.server.udpPort)}  tcp ${String(status.server.tcpPort)}`,
      '',
      formatTable(['GROUP', 'OPEN', 'MEMBERS'], status.groups.map((g) => [g.name, g.open ? 'open' : 'closed', String(g.members)])),
      '',
      formatTable(['MEMBER', 'NAME', 'ONLINE', 'JOINED'], status.members.map((m) => [m.id, m.name, m.online ? 'online' : 'offline', m.joined.join(',')])),
      '',
      formatTable(['TRANSFER', 'FILE', 'GROUP', 'DELIVERED', 'PENDING', 'FAILED'], status.transfers.map((t) => {
        const count = (state: string): string => String(t.deliveries.filter((d) => d.state === state).length);
        return [t.id.slice(0, 12), t.name, t.group, count('delivered'), String(t.deliveries.filter((d) => d.state === 'pending' || d.state === 'sending').length), count('failed')];
      })),
    ].join('\n'));
  })
  .command('groups', 'list the groups and their members', (y) => common(y), async (flags) => {
    const groups = await callDaemon<GroupRow[]>(await stateDirOf(flags as CommonFlags), 'groups', {});
    print(flags.json, groups, () => formatTable(['GROUP', 'OPEN', 'MEMBERS', 'ONLINE', 'DESCRIPTION'], groups.map((g) => [g.name, g.open ? 'open' : 'closed', String(g.members), String(g.online), g.description])));
  })
  .command('members [action] [group] [id]', 'list members, or allow / revoke one in a group', (y) => common(y)
    .positional('action', { choices: ['list', 'allow', 'revoke'] as const, default: 'list' as const })
    .positional('group', { type: 'string' })
    .positional('id', { type: 'string' })
    .example('$0 members allow Developers ABCDEFG-…', 'let a member id into Developers'), async (flags) => {
    const stateDir = await stateDirOf(flags as CommonFlags);
    if (flags.action === 'list') {
      const members = await callDaemon<MemberRow[]>(stateDir, 'members', {});
      print(flags.json, members, () => formatTable(['MEMBER', 'NAME', 'ADDRESS', 'ONLINE', 'JOINED', 'ALLOWED IN'], members.map((m) => [m.id, m.name, m.address, m.online ? 'online' : 'offline', m.joined.join(','), m.allowedIn.join(',')])));
      return;
    }
    if (!flags.group || !flags.id) throw Object.assign(new Error(`members ${flags.action} needs <group> <id>`), { usage: true });
    const result = await callDaemon(stateDir, flags.action, { group: flags.group, id: flags.id });
    print(flags.json, result, () => `${flags.action === 'allow' ? 'allowed' : 'revoked'} ${flags.id} in ${flags.group}`);
  })
  .command('id', "print this server's id", (y) => common(y), async (flags) => {
    const stateDir = await stateDirOf(flags as CommonFlags);
    await ensurePrivateDir(stateDir);
    const identity = await loadOrCreateIdentity(stateDir, 'group-server');
    print(flags.json, { id: identity.signer.id }, () => identity.signer.id);
  })
  .demandCommand(0)
  .help()
  .alias('h', 'help')
  .version(false)
  .fail((message, err) => {
    if (err) throw err;
    process.stderr.write(`group-server: ${message}\nRun "group-server --help" for usage.\n`);
    process.exit(EXIT.USAGE);
  });

try {
  await cli.parseAsync();
} catch (err) {
  const usage = (isGroupcastError(err) && (err.code === ErrorCode.CONFIG || err.code === ErrorCode.USAGE || err.code === ErrorCode.BAD_ID))
    || (err as { usage?: boolean }).usage === true;
  process.stderr.write(`group-server: ${(err as Error).message}\n`);
  process.exit(usage ? EXIT.USAGE : EXIT.FAILED);
}
