/**
 * `adainfer eval-tasks`: the paper's experiments — in-context classification and multiple-choice tasks at full
 * depth and with an exit policy, in the same run — written as results.json and report.html.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Command, Option } from 'commander';
import { native } from '../bindings/native';
import { AdaInferError, OptionError } from '../errors';
import { FEATURE_NAMES, FeatureName } from '../exit/classifier';
import { ClassifierKind, LabelKind } from '../exit/train';
import { buildReportHtml } from '../report/html';
import { Results, validateResults } from '../report/schema';
import { TASK_NAMES, TaskName } from '../tasks/formats';
import { parseExitSpec, runEvalTasks } from '../tasks/run';
import { featuresOption } from './exit_common';
import { addBackendOptions, BackendFlags, floatOption, intOption, modelOption } from './options';
import { progressBar } from './progress';
import { checkWritableDir } from './output';

interface EvalTasksFlags extends BackendFlags {
  model: string;
  tasks: string;
  shots: number;
  limit?: number;
  exit: string;
  trainExit?: boolean;
  classifier: ClassifierKind;
  target: number;
  label: LabelKind;
  feature: 'p1' | 'gap';
  features?: FeatureName[];
  trainLimit: number;
  mode: 'fast' | 'faithful';
  minLayer: number;
  checkEvery: number;
  dataDir: string;
  out: string;
  sweep: boolean;
  json?: boolean;
  seed: number;
  threads?: number;
}

/** Writes results.json and report.html into `dir`; returns their paths. */
export async function writeReport(results: Results, dir: string): Promise<{ json: string; html: string }> {
  const problems = validateResults(results);
  if (problems.length > 0) throw new AdaInferError('INTERNAL', `results do not match their schema: ${problems.join('; ')}`);
  fs.mkdirSync(dir, { recursive: true });
  const json = path.join(dir, 'results.json');
  const html = path.join(dir, 'report.html');
  fs.writeFileSync(json, JSON.stringify(results, null, 2) + '\n');
  fs.writeFileSync(html, await buildReportHtml(results));
  return { json, html };
}

export function formatTable(r: Results): string {
  const pct = (x: number) => (x * 100).toFixed(1) + '%';
  const head = ['task', 'n', 'acc full', 'acc exit', 'chance', 'agree', 'layers', 'pruned', 't full', 't exit', 'speedup'];
  const rows = Object.entries(r.tasks).map(([name, t]) => [
    name,
    String(t.n),
    pct(t.accuracyFull),
    pct(t.accuracyExit),
    pct(t.chance),
    pct(t.agreement),
    `${t.meanLayers.toFixed(2)}/${r.model.layers}`,
    pct(t.pruningRatio),
    `${t.secondsFull.toFixed(3)}s`,
    `${t.secondsExit.toFixed(3)}s`,
    t.speedup === null ? '-' : `${t.speedup.toFixed(2)}x`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(head), ...rows.map(line)].join('\n');
}

/**
 * Where the data sets are when --data-dir is not given: $ADAINFER_DATA_DIR, else shared/datasets beside the
 * adainfer folder (the development layout: ../shared next to the checkout). Resolved from this file, not the
 * working directory, so the command works from anywhere.
 */
export function defaultDataDir(): string {
  const fromEnv = process.env.ADAINFER_DATA_DIR;
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  return path.resolve(__dirname, '..', '..', '..', '..', 'shared', 'datasets');
}

export function registerEvalTasks(program: Command): void {
  addBackendOptions(
    program
      .command('eval-tasks')
      .description("the paper's tasks (SST-2, AG News, CommonsenseQA, MMLU, COPA): accuracy, layers and wall clock, full depth vs exit")
      .addOption(modelOption())
      .option('--tasks <list>', `comma-separated tasks (${TASK_NAMES.join(', ')})`, TASK_NAMES.join(','))
      .option('--shots <k>', 'demonstrations per prompt, drawn with the seed from the demo part', intOption('--shots', 0, 64), 0)
      .option('--limit <n>', 'examples evaluated per task (seeded draw; default: all)', intOption('--limit', 1))
      .option('--exit <policy|file>', "exit policy: never, threshold:<p1|gap>:<value>, or an exit file of train-exit", 'never')
      .option('--train-exit', "train the exit classifier on each task's demo part, then evaluate with it")
      .addOption(new Option('--classifier <kind>', '--train-exit: classifier').choices(['svm', 'svm-rbf', 'crf', 'threshold']).default('svm'))
      .option('--target <a>', '--train-exit: agreement with full depth to reach on held-out training examples', floatOption('--target', 0, 1), 0.99)
      .addOption(new Option('--label <kind>', '--train-exit: what a layer must match to count as "stop"').choices(['final', 'gold']).default('final'))
      .option('--features <a,b,c>', `--train-exit: the classifier's features (${FEATURE_NAMES.join(', ')})`, featuresOption)
      .addOption(new Option('--feature <f>', '--train-exit with --classifier threshold: the feature compared').choices(['p1', 'gap']).default('gap'))
      .option('--train-limit <n>', '--train-exit: training examples per task', intOption('--train-limit', 4), 200)
      .addOption(new Option('--mode <m>', 'lens features over the label tokens (fast) or the whole vocabulary').choices(['fast', 'faithful']).default('fast'))
      .option('--min-layer <l>', 'layers before the first check', intOption('--min-layer', 1), 1)
      .option('--check-every <c>', 'layers between checks', intOption('--check-every', 1), 1)
      .addOption(
        new Option('--data-dir <dir>', 'the data sets (not shipped: see "Task data" in the README), laid out as sst2/, agnews/, csqa/, mmlu/, copa/').default(
          defaultDataDir(),
          '$ADAINFER_DATA_DIR, else shared/datasets beside the adainfer folder',
        ),
      )
      .option('--out <dir>', 'where results.json and report.html go', 'eval-tasks-report')
      .option('--no-sweep', 'skip the threshold sweep (one untimed extra pass per example)')
      .option('--json', 'print the results object')
      .option('--seed <s>', 'seed of the demonstrations and example draws', intOption('--seed', 0, 0xffffffff), 1)
      .option('--threads <t>', 'threads (default: physical cores)', intOption('--threads', 1, 1024)),
  )
    .action(async (flags: EvalTasksFlags) => {
      const tasks = flags.tasks
        .split(',')
        .map((t) => t.trim())
        .filter((t) => t !== '');
      const unknown = tasks.filter((t) => !TASK_NAMES.includes(t as TaskName));
      if (tasks.length === 0 || unknown.length > 0) throw new OptionError('--tasks', `unknown task(s) ${unknown.join(', ')}; known: ${TASK_NAMES.join(', ')}`);
      const dataDir = path.resolve(flags.dataDir);
      if (!fs.existsSync(dataDir))
        throw new OptionError(
          '--data-dir',
          `${dataDir} does not exist. The task data sets (SST-2, AG News, CommonsenseQA, MMLU, COPA) do not ship with adainfer; ` +
            'get them as the README\'s "Task data" says and give their folder with --data-dir or ADAINFER_DATA_DIR',
        );
      checkWritableDir(flags.out, '--out');
      const exit = flags.trainExit ? { kind: 'never' as const } : parseExitSpec(flags.exit);
      if (flags.trainExit && flags.exit !== 'never') throw new OptionError('--exit', 'give either --exit or --train-exit, not both');
      const t0 = performance.now();
      const results = runEvalTasks({
        modelPath: flags.model,
        tasks: tasks as TaskName[],
        shots: flags.shots,
        limit: flags.limit,
        seed: flags.seed,
        exit,
        train: flags.trainExit
          ? { classifier: flags.classifier, target: flags.target, label: flags.label, feature: flags.feature, limit: flags.trainLimit, features: flags.features }
          : undefined,
        mode: flags.mode,
        schedule: { minLayer: flags.minLayer, checkEvery: flags.checkEvery },
        dataDir,
        threads: flags.threads ?? native().systemInfo().physicalCores,
        backend: flags.backend,
        device: flags.device,
        sweep: flags.sweep,
        progress: (task, total) => progressBar(task.padEnd(6), total),
        log: flags.json ? undefined : (line) => process.stderr.write(line + '\n'),
      });
      const files = await writeReport(results, flags.out);
      if (flags.json) {
        process.stdout.write(JSON.stringify(results) + '\n');
        return;
      }
      const s = results.settings;
      process.stdout.write(
        [
          `model ${results.model.name} (${results.model.layers} layers), ${s.shots}-shot, exit ${s.exit}${s.target !== null ? ` (target ${s.target})` : ''}, lens ${s.mode}`,
          formatTable(results),
          `wrote ${files.json} and ${files.html} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
        ].join('\n') + '\n',
      );
    });
}
