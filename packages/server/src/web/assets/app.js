// The groupcast web view: renders the snapshots /events pushes. Every text from the server (member
// names come from the network and are hostile) goes into the page with textContent, never as markup.
'use strict';

const byId = (id) => document.getElementById(id);
let snapshot;
/** Server time minus ours, so relative times follow the server's clock. */
let clockOffset = 0;
const now = () => Date.now() + clockOffset;

const shortId = (id) => id.slice(0, 7);

function formatBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function formatDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d`;
}

function presence(member) {
  if (member.online) return member.onlineSince === null ? 'online' : `online ${formatDuration(now() - member.onlineSince)}`;
  return member.lastSeen > 0 ? `offline, seen ${formatDuration(now() - member.lastSeen)} ago` : 'never connected';
}

/** A row of cells, each with a class the update fills by name. */
function row(classes) {
  const tr = document.createElement('tr');
  for (const name of classes) {
    const td = document.createElement('td');
    td.className = name;
    tr.append(td);
  }
  return tr;
}

function setText(parent, selector, text) {
  const node = parent.querySelector(selector);
  if (node.textContent !== text) node.textContent = text;
}

/**
 * Makes `parent`'s children match `items` in order, reusing the node of each key: no flicker, and a
 * <details> the operator opened or closed stays so.
 */
function reconcile(parent, items, keyOf, create, update) {
  const existing = new Map([...parent.children].map((child) => [child.dataset.key, child]));
  const wanted = new Set();
  let previous = null;
  for (const item of items) {
    const key = keyOf(item);
    wanted.add(key);
    let node = existing.get(key);
    if (!node) {
      node = create(item);
      node.dataset.key = key;
    }
    update(node, item);
    const expected = previous ? previous.nextSibling : parent.firstChild;
    if (node !== expected) parent.insertBefore(node, expected);
    previous = node;
  }
  for (const [key, node] of existing) if (!wanted.has(key)) node.remove();
}

function renderHeader(s) {
  setText(document, '#server-name', s.server.name);
  setText(document, '#server-info', `id ${shortId(s.server.id)} · data ${s.server.data} · up ${formatDuration(now() - s.server.startedAt)}`);
}

function renderGroups(s) {
  reconcile(byId('groups'), s.groups, (g) => g.name, () => row(['name', 'access', 'num members', 'num online', 'description']), (tr, g) => {
    setText(tr, '.name', g.name);
    setText(tr, '.access', g.open ? 'open' : 'closed');
    setText(tr, '.members', String(g.members));
    setText(tr, '.online', String(g.online));
    setText(tr, '.description', g.description);
  });
}

function renderMembers(s) {
  const more = s.membersTotal - s.members.length;
  setText(document, '#members-count', `${s.members.filter((m) => m.online).length} online of ${s.membersTotal}${more > 0 ? ` (first ${s.members.length} shown)` : ''}`);
  // Online first, then by name: the ones an operator looks for are at the top.
  const members = [...s.members].sort((a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  reconcile(byId('members'), members, (m) => m.id, () => row(['id', 'name', 'address', 'status', 'joined', 'num pending', 'num failed']), (tr, m) => {
    tr.dataset.member = m.id;
    tr.dataset.online = String(m.online);
    tr.dataset.failed = String(m.failed > 0);
    setText(tr, '.id', shortId(m.id));
    tr.querySelector('.id').title = m.id;
    setText(tr, '.name', m.name || '-');
    setText(tr, '.address', m.address || '-');
    setText(tr, '.status', presence(m));
    setText(tr, '.joined', m.joined.length ? m.joined.join(', ') : '-');
    setText(tr, '.pending', String(m.pending));
    setText(tr, '.failed', String(m.failed));
  });
}

function createTransfer(t) {
  const details = document.createElement('details');
  details.dataset.transfer = t.id;
  details.open = t.deliveries.some((d) => d.state !== 'delivered');
  const summary = document.createElement('summary');
  const table = document.createElement('table');
  const head = document.createElement('thead');
  const header = document.createElement('tr');
  for (const title of ['Name', 'Member', 'Progress', '', 'State', 'Note']) {
    const th = document.createElement('th');
    th.textContent = title;
    header.append(th);
  }
  head.append(header);
  table.append(head, document.createElement('tbody'));
  details.append(summary, table);
  return details;
}

function createDelivery() {
  const tr = row(['name', 'id', 'bar', 'num percent', 'state', 'note']);
  tr.querySelector('.bar').append(document.createElement('progress'));
  return tr;
}

/** A tree as `name/ (N files)`, as the CLI's status shows it. */
const transferName = (t) => (t.files === null ? t.name : `${t.name}/ (${t.files} files)`);

/** The group, and for `distribute --to` the members it went to: `Developers (to alice, bob)`. */
function destination(t) {
  if (!t.to) return t.group;
  const more = t.to.total - t.to.names.length;
  return `${t.group} (to ${t.to.names.join(', ')}${more > 0 ? ` and ${more} more` : ''})`;
}

function renderTransfer(details, t) {
  const count = (state) => t.deliveries.filter((d) => d.state === state).length;
  const open = t.deliveries.length - count('delivered') - count('failed');
  details.querySelector('summary').textContent = `${transferName(t)} → ${destination(t)} · ${formatBytes(t.size)} · ${count('delivered')} delivered, `
    + `${open} pending, ${count('failed')} failed · ${formatDuration(now() - t.createdAt)} ago · ${t.id.slice(0, 12)}`;
  reconcile(details.querySelector('tbody'), t.deliveries, (d) => d.member, createDelivery, (tr, d) => {
    tr.dataset.delivery = `${t.id}/${d.member}`;
    tr.dataset.state = d.state;
    setText(tr, '.name', d.name || '-');
    setText(tr, '.id', shortId(d.member));
    const bar = tr.querySelector('progress');
    bar.max = Math.max(1, t.size);
    bar.value = t.size === 0 && d.state === 'delivered' ? 1 : d.position;
    const percent = t.size > 0 ? Math.floor((d.position / t.size) * 100) : d.state === 'delivered' ? 100 : 0;
    setText(tr, '.percent', `${percent}%`);
    setText(tr, '.state', d.state);
    setText(tr, '.note', d.note);
  });
}

function renderTransfers(s) {
  const more = s.transfersTotal - s.transfers.length;
  setText(document, '#transfers-count', more > 0 ? `(the ${s.transfers.length} most recent of ${s.transfersTotal})` : '');
  byId('no-transfers').hidden = s.transfers.length > 0;
  reconcile(byId('transfers'), s.transfers, (t) => t.id, createTransfer, renderTransfer);
}

function render() {
  if (!snapshot) return;
  renderHeader(snapshot);
  renderGroups(snapshot);
  renderMembers(snapshot);
  renderTransfers(snapshot);
}

function connection(state, text) {
  const node = byId('connection');
  node.dataset.state = state;
  node.textContent = text;
}

function connect() {
  const events = new EventSource('events');
  events.addEventListener('open', () => connection('live', 'live'));
  events.addEventListener('status', (event) => {
    snapshot = JSON.parse(event.data);
    clockOffset = snapshot.now - Date.now();
    document.body.dataset.updates = String(Number(document.body.dataset.updates ?? 0) + 1);
    render();
  });
  events.addEventListener('error', () => {
    if (events.readyState === EventSource.CLOSED) connection('down', 'disconnected: reload the page');
    else connection('down', 'reconnecting…');
  });
}

connect();
// Relative times ("online 3m07s") move on between pushes.
setInterval(render, 1000);
