/** Cuts a string to at most `max` UTF-8 bytes without splitting a character (wire fields are capped in bytes). */
export function truncateUtf8(text: string, max: number): string {
  if (Buffer.byteLength(text) <= max) return text;
  let out = '';
  let bytes = 0;
  for (const char of text) {
    const length = Buffer.byteLength(char);
    if (bytes + length > max) break;
    out += char;
    bytes += length;
  }
  return out;
}

/** Text from the wire made safe for a terminal: control characters (escape sequences) shown as '?'. */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}
