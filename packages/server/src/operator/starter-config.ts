/**
 * What `group-server init` writes: every setting with its default and why one would change it.
 * Optional settings are commented out so the built-in defaults (and later flags) still apply; a
 * test uncomments each of them and checks the result against the schema, so this text cannot rot.
 */
export const STARTER_CONFIG = `// group-server configuration: JSON with comments (trailing commas are fine too).
//
// Precedence: a flag (--tcp-port 47701) beats an environment variable (GROUPCAST_TCP_PORT=47701),
// which beats this file, which beats the built-in default. Remove the // in front of a setting to use it.
{
  // Name members see in announcements. Default: this host's name.
  // "name": "files.example.org",

  // Interface for multicast, by address or name ("eth0"). Default: the first non-loopback one.
  // Set it on any machine with more than one interface (VPN, docker, Wi-Fi and cable).
  // "interface": "192.168.1.10",

  // Multicast group and UDP port of the control plane; every member must use the same two.
  // "groupAddress": "239.255.77.77",
  // "port": 47700,

  // TCP port of the TLS data connections (0 picks a free one and announces it).
  // "tcpPort": 47701,

  // The TCP port members are told to dial, when a port forward sits in front of tcpPort. Default: tcpPort.
  // "advertisePort": 47701,

  // Identity, membership, outbox and stored files. Must be absolute. Default: $STATE_DIRECTORY
  // under systemd, else $XDG_STATE_HOME/groupcast/server (~/.local/state/groupcast/server).
  // "stateDir": "/var/lib/groupcast-server",

  // Transfers in flight at once, across all members.
  // "concurrency": 8,

  // The most the server uploads, in bytes per second over every member and distribution: "50M",
  // "800k", "1G" (powers of 1000). "distribute --rate" caps one distribution below it. Unlimited unless set.
  // "rate": "50M",

  // How long a distributed file waits for members that are offline: 30s, 10m, 12h, 7d. A file is
  // removed from the store as soon as its deliveries ended, unless the backlog below keeps it.
  // "keep": "7d",

  // What a member that joins a group later gets of what was distributed before (within "keep"):
  // "none", "latest" (the newest file of each name) or "all".
  // "backlog": "latest",

  // Members an open group takes besides its configured and allowed ones; later JOINs are refused "group full".
  // "maxOpenMembers": 1000,

  // How long an open group keeps a member that neither connects nor sends anything (configured and
  // allowed members are never dropped).
  // "openMemberExpiry": "30d",

  // A member connection silent this long is dead, its delivery pending again (resumed when the member is
  // back); PINGs go out every third of it. 3s … 15s: shorter finds a frozen or unplugged member sooner.
  // "heartbeatTimeout": "15s",

  // Prometheus metrics (/metrics) and the live web view (/): "9477" means 127.0.0.1:9477; "ADDR:PORT" to
  // listen elsewhere, which needs "webToken". Off unless set.
  // "metrics": "9477",

  // Token every request to the metrics listener must carry (open /?token=... once, or send
  // "Authorization: Bearer ..."); 16 to 256 characters, e.g. from "openssl rand -hex 24".
  // "webToken": "change-me-to-a-long-random-secret",

  // fatal, error, warn, info, debug, trace or silent.
  // "logLevel": "info",
  // json, or pretty (default: pretty when stderr is a terminal, json otherwise, e.g. under systemd).
  // "logFormat": "json",

  // The groups this server offers. A group is closed unless "open": true; then only the member ids
  // listed here, allowed with "group-server members allow <group> <id>", or enrolled with a code from
  // "group-server invite <group>" can join it. A member prints its id with "group-client id".
  "groups": [
    {
      "name": "Developers",
      "description": "Source, builds and tools for developers",
      "members": [
        // "AAAAAAA-BBBBBBB-…",
      ],
    },
    {
      "name": "Designers",
      "description": "Design assets and fonts",
      "members": [],
    },
    // {
    //   "name": "Lab",
    //   "description": "Anyone on the lab network",
    //   "open": true,
    // },
  ],
}
`;
