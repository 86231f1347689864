/** Parsers for numeric command-line options, failing with an OptionError that names the flag. */
import { Command, Option } from 'commander';
import { DEFAULT_MODEL } from '../api';
import { OptionError } from '../errors';
import { BackendChoice, BACKENDS } from '../model/transformer';

export function intOption(flag: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isInteger(n) || n < min || n > max)
      throw new OptionError(flag, `expected an integer in [${min}, ${max}], got '${value}'`);
    return n;
  };
}

export function floatOption(flag: string, min: number, max = Infinity) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max)
      throw new OptionError(flag, `expected a number in [${min}, ${max}], got '${value}'`);
    return n;
  };
}

/** Where the blocks run: `--backend auto|cpu|cuda` and `--device N`, as ModelOptions of loadModel(). */
export interface BackendFlags {
  backend: BackendChoice;
  device?: number;
}

export function addBackendOptions(cmd: Command): Command {
  return cmd
    .option('--backend <b>', "where the blocks run: auto (CUDA when a device is usable), cpu, cuda", backendOption, 'auto')
    .option('--device <n>', 'CUDA device index', intOption('--device', 0, 1024));
}

function backendOption(value: string): BackendChoice {
  if (!(BACKENDS as readonly string[]).includes(value))
    throw new OptionError('--backend', `expected one of ${BACKENDS.join(', ')}, got '${value}'`);
  return value as BackendChoice;
}

/**
 * `-m, --model <path>`, the same in every command: defaults to the bundled model, shown in --help as
 * "(default: the bundled model, <file name>)" once rather than as a long absolute path.
 */
export function modelOption(): Option {
  return new Option('-m, --model <path>', 'GGUF model file or Hugging Face model folder').default(
    DEFAULT_MODEL,
    `the bundled model, ${DEFAULT_MODEL.split(/[\\/]/).pop()}`,
  );
}

/**
 * An old spelling of an option, still accepted so existing scripts keep working, but left out of --help.
 * The command reads `flags[attribute] ?? flags[<new attribute>]`.
 */
export function hiddenAlias(flags: string, parse?: (value: string) => unknown): Option {
  const o = new Option(flags).hideHelp();
  return parse ? o.argParser(parse) : o;
}

/** The flags of addTextOptions. */
export interface TextFlags {
  stop?: string[];
  repeatPenalty?: number;
  repeatLastN?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
}

/** Stop strings and repetition penalties (generate, chat): `--stop` may be given several times. */
export function addTextOptions(cmd: Command): Command {
  return cmd
    .option('--stop <text>', 'stop where the text contains this string (not printed; repeatable)', (v: string, prev: string[] | undefined) => {
      if (v.length === 0) throw new OptionError('--stop', 'expected a non-empty string');
      return [...(prev ?? []), v];
    })
    .option('--repeat-penalty <r>', "llama.cpp's repeat penalty over the last --repeat-last-n tokens (1 = off)", floatOption('--repeat-penalty', 0))
    .option('--repeat-last-n <n>', 'tokens the penalties look at (0 = off, -1 = all; default 64)', intOption('--repeat-last-n', -1))
    .option('--presence-penalty <p>', 'subtracted once from the logit of a token seen in the window (0 = off)', floatOption('--presence-penalty', -Infinity))
    .option('--frequency-penalty <f>', 'subtracted per occurrence in the window (0 = off)', floatOption('--frequency-penalty', -Infinity));
}

/** The generate options of addTextOptions' flags (absent flags stay absent: the API's defaults apply). */
export function textOptions(flags: TextFlags): TextFlags {
  const { stop, repeatPenalty, repeatLastN, presencePenalty, frequencyPenalty } = flags;
  const o: TextFlags = { stop, repeatPenalty, repeatLastN, presencePenalty, frequencyPenalty };
  for (const k of Object.keys(o) as (keyof TextFlags)[]) if (o[k] === undefined) delete o[k];
  return o;
}
