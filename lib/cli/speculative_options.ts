/**
 * The self-speculative decoding flags — `--speculative`, `--draft-layer N | --draft-exit FILE`, `--max-draft K` —
 * shared by `adainfer generate`, `bench` and `batch` (and the queue's `batch submit`, where they travel with the job).
 */
import { Command } from 'commander';
import { OptionError } from '../errors';
import type { SpeculativeSpec } from '../engine/protocol';
import { intOption } from './options';

export interface SpeculativeFlags {
  speculative?: boolean;
  draftLayer?: number;
  draftExit?: string;
  maxDraft?: number;
}

/** Adds the flags; `what` describes --speculative for this command. */
export function addSpeculativeOptions(cmd: Command, what: string): Command {
  return cmd
    .option('--speculative', what)
    .option('--draft-layer <n>', 'speculative: layers each drafted token runs', intOption('--draft-layer', 1))
    .option('--draft-exit <file>', "speculative: an exit file (train-exit) decides each drafted token's depth")
    .option('--max-draft <k>', 'speculative: drafted tokens per verification step (default 4)', intOption('--max-draft', 1));
}

/** The flags checked (exactly one drafter with --speculative; none of them without), as the API's option. */
export function speculativeFromFlags(flags: SpeculativeFlags): SpeculativeSpec | undefined {
  if (flags.speculative && (flags.draftLayer === undefined) === (flags.draftExit === undefined))
    throw new OptionError('--speculative', 'needs one of --draft-layer N and --draft-exit FILE');
  if (!flags.speculative && (flags.draftLayer !== undefined || flags.draftExit !== undefined || flags.maxDraft !== undefined))
    throw new OptionError('--draft-layer', '--draft-layer, --draft-exit and --max-draft need --speculative');
  if (!flags.speculative) return undefined;
  return { draft: flags.draftExit !== undefined ? flags.draftExit : { layer: flags.draftLayer! }, ...(flags.maxDraft !== undefined && { maxDraft: flags.maxDraft }) };
}
