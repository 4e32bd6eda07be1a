import yargs, { type ArgumentsCamelCase, type InferredOptionTypes, type Options } from 'yargs';
import { hideBin } from 'yargs/helpers';
import {
  ControlEndpoint, createLogger, defaultStateDir, DEFAULT_GROUP_ADDRESS, DEFAULT_UDP_PORT, ensurePrivateDir,
  ErrorCode, isGroupcastError, loadOrCreateIdentity, type Logger,
} from '@groupcast/shared';
import { hostname } from 'node:os';
import { startClient } from './daemon.js';
import { formatGroupListing } from './groups-table.js';
import { listGroups } from './list-groups.js';
import { defaultDownloadsDir, parseDuration, parsePort, resolveOptions, type ClientOptions } from './options.js';
import { ServerPin } from './pinning.js';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const SHUTDOWN_GRACE_MS = 5_000;

/**
 * Every option is global: each may also come from a GROUPCAST_<NAME> variable, and with strict
 * parsing a variable meant for the daemon (GROUPCAST_JOIN) must not make `group-client id` fail.
 */
const OPTIONS = {
  join: { type: 'string', array: true, describe: 'group to join (repeatable)', group: 'Daemon:' },
  code: { type: 'string', describe: 'join code, sent with every JOIN', group: 'Daemon:' },
  downloads: { type: 'string', describe: `where files land (default ${defaultDownloadsDir()})`, group: 'Daemon:' },
  name: { type: 'string', describe: 'name sent to the server (default: host name)', group: 'Daemon:' },
  'trust-first-server': { type: 'boolean', default: false, describe: 'pin the first server seen and store it', group: 'Daemon:' },
  'state-dir': { type: 'string', default: defaultStateDir('client'), describe: 'identity, pin and receive log' },
  interface: { type: 'string', describe: 'multicast interface: address or name (default: first non-loopback)' },
  'group-address': { type: 'string', default: DEFAULT_GROUP_ADDRESS, describe: 'multicast group' },
  port: { type: 'number', default: DEFAULT_UDP_PORT, describe: 'control-plane UDP port', coerce: (port: number) => parsePort(port, '--port') },
  server: { type: 'string', describe: 'HOST[:PORT]: also ask this server unicast (when multicast does not reach)' },
  'server-id': { type: 'string', describe: 'the server id to trust (pins it)' },
  'log-level': { choices: LOG_LEVELS, default: 'info' as (typeof LOG_LEVELS)[number], describe: 'log level' },
  'log-format': { choices: ['json', 'pretty'] as const, describe: 'log format (default: pretty on a terminal)' },
} as const satisfies Record<string, Options>;

type Args = ArgumentsCamelCase<InferredOptionTypes<typeof OPTIONS>>;

function rootLogger(argv: Args): Logger {
  // The shared logger reads its format from the environment; the flag only sets that.
  if (argv.logFormat) process.env.GROUPCAST_LOG_FORMAT = argv.logFormat;
  return createLogger({ name: 'group-client', level: argv.logLevel });
}

function clientOptions(argv: Args, log: Logger): ClientOptions {
  return {
    stateDir: argv.stateDir,
    downloads: argv.downloads ?? defaultDownloadsDir(),
    groups: argv.join,
    code: argv.code,
    interface: argv.interface,
    groupAddress: argv.groupAddress,
    port: argv.port,
    server: argv.server,
    serverId: argv.serverId,
    trustFirstServer: argv.trustFirstServer,
    name: argv.name,
    log,
  };
}

/** One line for a person: the message and its causes. USAGE exits 2, everything else 1. */
function die(err: unknown): never {
  const parts: string[] = [];
  for (let cause: unknown = err; cause instanceof Error && parts.length < 4; cause = cause.cause) {
    if (!parts.some((part) => part.includes(cause.message))) parts.push(cause.message);
  }
  process.stderr.write(`group-client: ${parts.length ? parts.join(': ') : String(err)}\n`);
  process.exit(isGroupcastError(err, ErrorCode.USAGE) ? 2 : 1);
}

async function runDaemon(argv: Args): Promise<void> {
  const log = rootLogger(argv);
  const client = await startClient(clientOptions(argv, log)).catch(die);
  log.info({ id: client.id }, 'group-client running');
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'shutting down');
    setTimeout(() => {
      log.error({ graceMs: SHUTDOWN_GRACE_MS }, 'shutdown took too long: exiting anyway');
      process.exit(1);
    }, SHUTDOWN_GRACE_MS).unref();
    client.close().then(() => process.exit(0), die);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

async function printId(argv: Args): Promise<void> {
  try {
    await ensurePrivateDir(argv.stateDir);
    const identity = await loadOrCreateIdentity(argv.stateDir, `group-client ${hostname()}`);
    process.stdout.write(`${identity.signer.id}\n`);
  } catch (err) {
    die(err);
  }
}

async function printGroups(argv: Args & { json: boolean; timeout: number }): Promise<void> {
  const log = rootLogger(argv);
  let endpoint: ControlEndpoint | undefined;
  try {
    const options = resolveOptions(clientOptions(argv, log));
    await ensurePrivateDir(options.stateDir);
    const identity = await loadOrCreateIdentity(options.stateDir, `group-client ${hostname()}`);
    // Read the pin without storing --server-id: a query changes nothing.
    const pin = new ServerPin({ log, stateDir: options.stateDir, trustFirstServer: false });
    await pin.load();
    endpoint = new ControlEndpoint({
      log, signer: identity.signer, groupAddress: options.groupAddress, port: options.port, iface: options.iface, role: 'client',
    });
    await endpoint.open();
    log.debug({ interface: options.iface.name, address: options.iface.address }, 'asking for groups');
    const listing = await listGroups({
      log, endpoint, pinned: options.serverId ?? pin.pinned, unicast: options.unicast, timeoutMs: argv.timeout,
    });
    endpoint.close();
    if (!listing) {
      process.stderr.write(
        `group-client: no server answered within ${argv.timeout} ms on ${options.iface.name} (${options.iface.address}); `
          + 'check --interface, or name the server with --server HOST\n',
      );
      process.exit(1);
    }
    // JSON keeps every key (an unannounced name is null), so scripts see one shape.
    const json = (): string => JSON.stringify(listing, (_key, value: unknown) => value ?? null, 2);
    process.stdout.write(argv.json ? `${json()}\n` : `${formatGroupListing(listing)}\n`);
    process.exit(0);
  } catch (err) {
    endpoint?.close();
    die(err);
  }
}

await yargs(hideBin(process.argv))
  .scriptName('group-client')
  .usage('$0 [command] [options]\n\nThe groupcast member daemon: finds the server, joins groups, receives files.')
  .env('GROUPCAST')
  .options(OPTIONS)
  .command(['start', '$0'], 'run the member daemon (default)', {}, (argv) => runDaemon(argv as Args))
  .command(
    'groups',
    'list the groups the server offers',
    {
      json: { type: 'boolean', default: false, describe: 'print JSON' },
      timeout: { type: 'string', default: '3s', describe: 'how long to wait for an answer', coerce: parseDuration },
    },
    (argv) => printGroups(argv as unknown as Args & { json: boolean; timeout: number }),
  )
  .command('id', "print this member's id (made on first use)", {}, (argv) => printId(argv as Args))
  .strict()
  .fail((message, err) => {
    // Parsing and validation problems only; command handlers report their own errors.
    const text = message || (err instanceof Error ? err.message : String(err));
    const hint = /^Unknown argument/.test(text) ? ' (from the command line or a GROUPCAST_* variable)' : '';
    process.stderr.write(`group-client: ${text}${hint}\nRun group-client --help for usage.\n`);
    process.exit(2);
  })
  .help()
  .alias('help', 'h')
  .version(false)
  .parseAsync();
