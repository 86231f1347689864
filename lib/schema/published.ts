/**
 * The JSON Schemas published in docs/schemas/ (for users who read or write these files without this
 * runtime). The TypeScript constants are the source; `npm run schemas` writes the files, and a test fails when
 * a published file differs from its constant.
 */
import * as fs from 'fs';
import * as path from 'path';
import { EXIT_FILE_SCHEMA } from '../exit/exit_file_schema';
import { LATENCY_REPORT_SCHEMA } from '../latency/report';
import { RESULTS_SCHEMA } from '../report/schema';

export const PUBLISHED_SCHEMAS: Record<string, object> = {
  'exit-file.schema.json': EXIT_FILE_SCHEMA,
  'results.schema.json': RESULTS_SCHEMA,
  'bench-latency.schema.json': LATENCY_REPORT_SCHEMA,
};

/** The text of a published schema file. */
export function schemaText(schema: object): string {
  return JSON.stringify(schema, null, 2) + '\n';
}

export function writePublishedSchemas(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, schema] of Object.entries(PUBLISHED_SCHEMAS)) fs.writeFileSync(path.join(dir, name), schemaText(schema));
}
