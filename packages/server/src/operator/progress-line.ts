import stringWidth from 'string-width';

/**
 * One progress bar line of `distribute` on a terminal, laid out to fit its width: a line wider than
 * the terminal wraps, and a wrapped bar breaks the redraw (the cursor goes back fewer rows than were
 * written, leaving stray characters). What matters most stays: percent, rate and ETA; the file name
 * is shortened in the middle, where its extension and its start survive.
 */
export interface ProgressParts {
  /** Who: a member's label, or "storing". */
  label: string;
  file: string;
  /** 0 to 1. */
  fraction: number;
  /** "69.3 MiB of 190.7 MiB". */
  sent: string;
  /** "24.6 MiB/s". */
  rate: string;
  /** "6.0s" or "?". */
  eta: string;
  /** Where the bytes came from; empty when it does not apply. */
  sources: string;
}

const ELLIPSIS = '…';
/** The bar's cells when there is room, and when room is short. */
const BAR_WIDE = 20;
const BAR_NARROW = 10;
/** A file name cut shorter than this tells too little: first the line drops its details and narrows its bar. */
const MIN_FILE = 20;
/** On a narrow terminal the member's label keeps at least this much of its start. */
const MIN_LABEL = 6;
const FULL = '\u2588';
const EMPTY = '\u2591';

/** Columns a string takes on a terminal (wide characters count two). */
export const displayWidth = (text: string): number => stringWidth(text);

/** The first characters of `text` that fit in `width` columns. */
function headOf(text: string, width: number): string {
  let out = '';
  for (const char of text) {
    if (displayWidth(out + char) > width) break;
    out += char;
  }
  return out;
}

/** The last characters of `text` that fit in `width` columns. */
function tailOf(text: string, width: number): string {
  let out = '';
  for (const char of [...text].reverse()) {
    if (displayWidth(char + out) > width) break;
    out = char + out;
  }
  return out;
}

/** `text` in at most `width` columns: whole, or its start and end around an ellipsis. */
export function middleEllipsis(text: string, width: number): string {
  if (displayWidth(text) <= width) return text;
  if (width <= 0) return '';
  if (width === 1) return ELLIPSIS;
  const room = width - 1;
  const head = headOf(text, Math.ceil(room / 2));
  return `${head}${ELLIPSIS}${tailOf(text, room - displayWidth(head))}`;
}

function bar(fraction: number, cells: number): string {
  const full = Math.round(Math.min(1, Math.max(0, fraction)) * cells);
  return `${FULL.repeat(full)}${EMPTY.repeat(cells - full)}`;
}

/** The line without the name, in decreasing detail: each drops what matters least of the one before. */
function detailVariants(parts: ProgressParts): string[] {
  const percent = `${Math.floor(Math.min(1, Math.max(0, parts.fraction)) * 100)}%`;
  const essential = `${parts.rate}  eta ${parts.eta}`;
  const sources = parts.sources ? `  ${parts.sources}` : '';
  const wide = `[${bar(parts.fraction, BAR_WIDE)}] ${percent}`;
  const narrow = `[${bar(parts.fraction, BAR_NARROW)}] ${percent}`;
  return [
    `${wide}  ${parts.sent}  ${essential}${sources}`,
    `${wide}  ${parts.sent}  ${essential}`,
    `${wide}  ${essential}`,
    `${narrow}  ${essential}`,
    `${percent}  ${essential}`,
    `${percent} ${parts.rate} eta ${parts.eta}`,
  ];
}

/**
 * The line in at most `columns - 1` columns (the last column is left free: a character written there
 * makes some terminals wrap at the next write). The most detailed variant that fits with the whole
 * name; failing that, the first that leaves the label and MIN_FILE of the file name, the name cut to
 * the room left; on a terminal too narrow even for that, the least detailed one, cut to the width.
 */
export function fitProgress(parts: ProgressParts, columns: number): string {
  const budget = Math.max(1, columns - 1);
  const name = `${parts.label}  ${parts.file}`;
  const variants = detailVariants(parts);
  const room = (details: string): number => budget - displayWidth(details) - 1;
  const whole = variants.find((details) => room(details) >= displayWidth(name));
  if (whole !== undefined) return `${name} ${whole}`;
  const wanted = displayWidth(parts.label) + 2 + Math.min(MIN_FILE, displayWidth(parts.file));
  const shortened = variants.find((details) => room(details) >= wanted) ?? variants.at(-1) ?? '';
  const line = `${fitName(parts.label, parts.file, Math.max(0, room(shortened)))} ${shortened}`;
  return displayWidth(line) <= budget ? line : headOf(line, budget);
}

/**
 * Label and file in `width` columns: the file cut in the middle, down to MIN_FILE; narrower, the label
 * keeps its start (the member's name) in about half the room and the file has the rest.
 */
function fitName(label: string, file: string, width: number): string {
  const forFile = width - displayWidth(label) - 2;
  if (forFile >= Math.min(MIN_FILE, displayWidth(file))) return `${label}  ${middleEllipsis(file, forFile)}`;
  const labelRoom = Math.max(MIN_LABEL, Math.floor(width * 0.45), width - 1 - displayWidth(file));
  const shortLabel = displayWidth(label) <= labelRoom ? label : `${headOf(label, labelRoom - 1).trimEnd()}${ELLIPSIS}`;
  return `${shortLabel} ${middleEllipsis(file, width - displayWidth(shortLabel) - 1)}`;
}
