/**
 * A small RFC 4180 CSV parser: comma-separated fields, double-quoted fields may hold commas, newlines and
 * doubled quotes (""). Enough for the AG News and MMLU files; not a general dialect sniffer.
 */
import { AdaInferError } from '../errors';

/** Parses `text` into rows of fields. `path` names the file in errors. A trailing newline adds no row. */
export function parseCsv(text: string, path: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  let line = 1;
  let i = 0;
  if (text.charCodeAt(0) === 0xfeff) i = 1; // BOM
  const endRow = () => {
    row.push(field);
    field = '';
    if (!(row.length === 1 && row[0] === '')) rows.push(row); // blank lines are skipped
    row = [];
  };
  for (; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else {
        if (c === '\n') line++;
        field += c;
      }
    } else if (c === '"') {
      if (field !== '') throw new AdaInferError('DATA_FILE', `${path}:${line}: a quote inside an unquoted field`);
      quoted = true;
    } else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      endRow();
      line++;
    } else field += c;
  }
  if (quoted) throw new AdaInferError('DATA_FILE', `${path}:${line}: a quoted field is not closed at the end of the file`);
  if (field !== '' || row.length > 0) endRow();
  return rows;
}

/** Rows of a CSV file with the given header (checked), as objects keyed by the header's names. */
export function csvRecords(text: string, path: string, header: string[]): Record<string, string>[] {
  const rows = parseCsv(text, path);
  if (rows.length === 0) throw new AdaInferError('DATA_FILE', `${path}: empty file`);
  const got = rows[0].map((h) => h.trim());
  if (got.length !== header.length || got.some((h, i) => h !== header[i]))
    throw new AdaInferError('DATA_FILE', `${path}: header is '${got.join(',')}', expected '${header.join(',')}'`);
  return rows.slice(1).map((r, k) => {
    if (r.length !== header.length)
      throw new AdaInferError('DATA_FILE', `${path}: record ${k + 1} has ${r.length} fields, expected ${header.length}`);
    const o: Record<string, string> = {};
    header.forEach((h, j) => (o[h] = r[j]));
    return o;
  });
}
