/**
 * The text form of a journal entry, for when it cannot go to journald (a container, a terminal, a pipe): the
 * message, the entry's fields as `KEY=value` pairs on the first line, and the stack below it, every line prefixed
 * `<N>` and every line after the first indented by two spaces, so one entry stays one record for a reader that joins
 * indented lines (docker logs viewers, multiline parsers) and journald's stream reader still files each line at
 * its priority. docs/journal.md, "stderr fallback".
 */

/** Fields the text form leaves out: already shown (MESSAGE, PRIORITY, the stack), or noise on every line. */
const NOT_PRINTED = new Set(['MESSAGE', 'PRIORITY', 'SYSLOG_IDENTIFIER', 'EXCEPTION_TEXT', 'CODE_FILE', 'CODE_LINE', 'CODE_FUNC']);

/** A value as logfmt writes it: bare when it is plain, else a JSON string (quotes, spaces, `=` and newlines escaped). */
function logfmtValue(value: string | Uint8Array): string {
  if (typeof value !== 'string') return JSON.stringify(`<${value.length} bytes>`);
  return value !== '' && /^[\x21-\x7e]+$/.test(value) && !/["=\\]/.test(value) ? value : JSON.stringify(value);
}

/** The fields of an entry as ` KEY=value` pairs (with a leading space; empty when there are none). */
export function fieldsText(fields: Iterable<readonly [string, string | Uint8Array]> | undefined): string {
  if (!fields) return '';
  let out = '';
  for (const [key, value] of fields) if (!NOT_PRINTED.has(key)) out += ` ${key}=${logfmtValue(value)}`;
  return out;
}

/**
 * The stderr form of an entry: the message's first line and the fields, then the message's other lines and the
 * exception's text (the stack) indented by two spaces; every line prefixed `<N>` unless `levelPrefix` is false.
 */
export function fallbackLines(
  priority: number,
  message: string,
  exceptionText: string | undefined,
  levelPrefix = true,
  fields?: Iterable<readonly [string, string | Uint8Array]>,
): string {
  const prefix = levelPrefix ? `<${priority}>` : '';
  let body = message.endsWith('\n') ? message.slice(0, -1) : message;
  // The stack starts with the message's line when the message is the error itself: print that once.
  if (exceptionText !== undefined) body = exceptionText.startsWith(body) ? exceptionText : `${body}\n${exceptionText}`;
  const lines = body.split('\n');
  lines[0] += fieldsText(fields);
  return `${prefix}${lines.join(`\n${prefix}  `)}\n`;
}
