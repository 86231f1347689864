/**
 * `--exit FILE|auto|never` of generate and batch. `auto` picks the exit file shipped for this model: a
 * `*.exit.json` beside the model file or in the bundled models/ folder whose recorded model fingerprint and
 * layer count equal the loaded model's (an exit file trained for another model would be refused anyway);
 * when none matches, the model runs at full depth.
 */
import * as fs from 'fs';
import * as path from 'path';
import { DEFAULT_MODEL } from '../api';
import { loadExitFile } from '../exit/exit_file';

/** The folder of the bundled models, where their exit files ship. */
export const BUNDLED_MODELS_DIR = path.dirname(DEFAULT_MODEL);

export interface ModelIdentity {
  path: string;
  fingerprint: string;
  name: string;
  nLayer: number;
}

/** What `--exit` resolved to: an exit file, or full depth; `source` says how (for --json and messages). */
export type ExitChoice = { file: string; source: 'given' | 'auto' } | { file: undefined; source: 'never' | 'auto-none' };

/** Resolves `--exit` for a loaded model; a given file is checked against the model here (EXIT_FILE when it does not match). */
export function resolveExitChoice(choice: string, model: ModelIdentity): ExitChoice {
  if (choice === 'never') return { file: undefined, source: 'never' };
  if (choice === 'auto') {
    const found = findShippedExitFile(model);
    return found ? { file: found, source: 'auto' } : { file: undefined, source: 'auto-none' };
  }
  loadExitFile(choice, model);
  return { file: choice, source: 'given' };
}

/** The first `*.exit.json` beside the model, then in models/, made for this model; undefined when none is. */
export function findShippedExitFile(model: ModelIdentity): string | undefined {
  const dirs = [...new Set([path.dirname(path.resolve(model.path)), BUNDLED_MODELS_DIR])];
  for (const dir of dirs) {
    let names: string[];
    try {
      names = fs.readdirSync(dir).filter((n) => n.endsWith('.exit.json')).sort();
    } catch {
      continue;
    }
    for (const name of names) {
      const file = path.join(dir, name);
      if (recordedFor(file, model)) return file;
    }
  }
  return undefined;
}

function recordedFor(file: string, model: ModelIdentity): boolean {
  try {
    const f = JSON.parse(fs.readFileSync(file, 'utf8')) as { model?: { fingerprint?: unknown; nLayer?: unknown } };
    return f.model?.fingerprint === model.fingerprint && f.model?.nLayer === model.nLayer;
  } catch {
    return false; // unreadable or not JSON: not a candidate (a file named with --exit gets the full check)
  }
}
