/**
 * `adainfer train-exit`: collects lens features at full depth on a data set, fits an exit classifier,
 * calibrates its threshold to a target agreement with full depth, and saves an exit file.
 */
import { Command, Option } from 'commander';
import { collectTraces, oracleBound } from '../exit/collect';
import { ExitFile, exitFileFormat, saveExitFile } from '../exit/exit_file';
import { DEFAULT_FAST_TOP_K } from '../defaults';
import { LensOptions } from '../exit/lens';
import { checkSchedule } from '../exit/policy';
import { FEATURE_NAMES, FeatureName } from '../exit/classifier';
import { ClassifierKind, DEFAULT_FEATURES, DEFAULT_PROBE_FORM, LabelKind, PAPER_PRESET, trainPolicy } from '../exit/train';
import { PROBE_FORMS, ProbeForm } from '../exit/probe';
import { OptionError } from '../errors';
import { DocumentPart } from '../exit/data';
import { addExampleOptions, docPartOption, ExampleFlags, featuresOption, loadForExit } from './exit_common';
import { floatOption, hiddenAlias, intOption } from './options';
import { checkWritableFile } from './output';
import { progressBar } from './progress';

interface TrainFlags extends ExampleFlags {
  label: LabelKind;
  classifier: ClassifierKind;
  target: number;
  feature: 'p1' | 'gap';
  mode: 'faithful' | 'fast';
  topK: number;
  minLayer: number;
  checkEvery: number;
  out?: string;
  /** The old spelling `--output` (hidden alias of --out). */
  output?: string;
  json?: boolean;
  calibrationData?: string;
  calibrationDocPart?: DocumentPart;
  calibrationLimit?: number;
  preset?: 'paper';
  features?: FeatureName[];
  probe: ProbeForm;
  thresholds: 'single' | 'shaped' | 'per-layer';
  bound?: 'documents' | 'positions';
  maxDrop?: number;
}


export function registerTrainExit(program: Command): void {
  const cmd = program.command('train-exit').description('train and calibrate an exit classifier, save it as an exit file');
  addExampleOptions(cmd)
    .addOption(new Option('--label <kind>', 'what a layer must match to count as "stop"').choices(['final', 'gold']).default('final'))
    .addOption(new Option('--classifier <kind>', 'classifier').choices(['svm', 'svm-rbf', 'crf', 'threshold']).default('svm'))
    .option(
      '--target <a>',
      "agreement with full depth promised on unseen documents: the calibration agreement's 95% lower confidence bound must reach it",
      floatOption('--target', 0, 1),
      0.99,
    )
    .option(
      '--max-drop <points>',
      "the paper's criterion instead of --target: the threshold whose next-token accuracy drop against full depth has a 95% upper bound (over the calibration documents) <= this many points; needs gold tokens (plain text data)",
      floatOption('--max-drop', 0, 100),
    )
    .option('--calibration-data <file>', 'calibrate on this data (fit on all of --data); default: a seeded 20% of --data\'s documents')
    .option('--calibration-doc-part <i/n>', 'only part i of n of the calibration data\'s documents (as --doc-part)', docPartOption('--calibration-doc-part'))
    .option('--calibration-limit <n>', 'calibration examples drawn (seeded)', intOption('--calibration-limit', 1))
    .addOption(new Option('--feature <f>', 'threshold classifier: the feature compared').choices(['p1', 'gap']).default('gap'))
    .addOption(new Option('--mode <m>', 'lens over the whole vocabulary, or a candidate set').choices(['faithful', 'fast']).default('faithful'))
    .option('--top-k <k>', 'fast mode: candidates kept from the first check', intOption('--top-k', 2, 1024), DEFAULT_FAST_TOP_K)
    .option('--min-layer <l>', 'layers before the first check', intOption('--min-layer', 1), 1)
    .option('--check-every <c>', 'layers between checks', intOption('--check-every', 1), 1)
    .addOption(
      new Option('--preset <p>', "paper: the paper's method as published (faithful lens, p1 + gap, linear SVM, the SVM's own sign; no calibrated threshold)").choices([
        'paper',
      ]),
    )
    .addOption(
      new Option(
        '--thresholds <t>',
        'single: one calibrated threshold; shaped: one per layer, their shape chosen on the fit part and one level calibrated; per-layer: one per layer, all chosen jointly on the calibration part (overfits small calibration sets)',
      )
        .choices(['single', 'shaped', 'per-layer'])
        .default('single'),
    )
    .addOption(
      new Option(
        '--bound <unit>',
        "what the calibration bound counts as independent: documents (the stories, whose positions agree or fail together; default) or positions (per-layer: positions only)",
      ).choices(['documents', 'positions']),
    )
    .option('--features <a,b,c>', `classifier features (${FEATURE_NAMES.join(', ')}; default ${DEFAULT_FEATURES.join(',')})`, featuresOption)
    .addOption(
      new Option('--probe <form>', "with the 'probe' feature: the hidden-state probe's form, a per-layer logistic regression (linear) or a small MLP shared by the layers (mlp; exit file format adainfer.exit/2)")
        .choices([...PROBE_FORMS])
        .default(DEFAULT_PROBE_FORM),
    )
    .option('-o, --out <file>', 'exit file to write (required)')
    .addOption(hiddenAlias('--output <file>'))
    .option('--json', 'print the summary as JSON')
    .action((flags: TrainFlags) => {
      const output = flags.out ?? flags.output;
      if (output === undefined) throw new OptionError('--out', 'is required: the exit file to write');
      checkWritableFile(output, '--out');
      const t0 = performance.now();
      if (flags.preset === 'paper') {
        // The preset fixes these; an explicit other choice is a contradiction, not something to override quietly.
        for (const [flag, key, value] of [
          ['--classifier', 'classifier', PAPER_PRESET.classifier],
          ['--mode', 'mode', PAPER_PRESET.lens.mode],
        ] as const)
          if (cmd.getOptionValueSource(key) === 'cli' && flags[key] !== value) throw new OptionError(flag, `--preset paper uses ${value}, got ${flags[key]}`);
        if (flags.features) throw new OptionError('--features', '--preset paper uses p1,gap');
        if (flags.thresholds !== 'single') throw new OptionError('--thresholds', "--preset paper uses the SVM's own sign, no calibrated threshold");
        if (flags.maxDrop !== undefined) throw new OptionError('--max-drop', "--preset paper uses the SVM's own sign, no calibrated threshold");
        flags.classifier = PAPER_PRESET.classifier;
        flags.mode = PAPER_PRESET.lens.mode;
        flags.features = PAPER_PRESET.features;
      }
      const lens: LensOptions = flags.mode === 'fast' ? { mode: 'fast', topK: flags.topK } : { mode: 'faithful' };
      const schedule = checkSchedule({ minLayer: flags.minLayer, checkEvery: flags.checkEvery });
      const second = flags.calibrationData ? { data: flags.calibrationData, limit: flags.calibrationLimit, docPart: flags.calibrationDocPart } : undefined;
      const { model, ctx, examples, secondExamples } = loadForExit(flags, Math.max(8, flags.topK), second);
      try {
        const bar = progressBar('features', examples.length + (secondExamples?.length ?? 0));
        const features = flags.features ?? DEFAULT_FEATURES;
        const traces = collectTraces(ctx, examples, schedule, lens, (d) => bar.update(d), undefined, features);
        const calibrationTraces =
          secondExamples && collectTraces(ctx, secondExamples, schedule, lens, (d) => bar.update(examples.length + d), undefined, features);
        bar.stop();
        const trained = trainPolicy(traces, schedule, lens, {
          classifier: flags.classifier,
          label: flags.label,
          target: flags.target,
          seed: flags.seed,
          feature: flags.feature,
          calibrationTraces,
          features: flags.features,
          probe: flags.probe,
          decision: flags.preset === 'paper' ? PAPER_PRESET.decision : 'calibrated',
          thresholds: flags.thresholds,
          bound: flags.bound,
          maxDrop: flags.maxDrop === undefined ? undefined : flags.maxDrop / 100,
        });
        const nLayer = model.config.nLayer;
        const oracle = schedule.minLayer === 1 && schedule.checkEvery === 1 && lens.mode === 'faithful' ? oracleBound(traces) : undefined;
        const classifier = trained.classifier?.toJSON();
        const file: ExitFile = {
          format: exitFileFormat(classifier),
          model: { fingerprint: model.fingerprint, name: model.config.name, nLayer },
          policy: {
            kind: trained.kind,
            schedule,
            lens,
            threshold: trained.threshold,
            layerThresholds: trained.layerThresholds,
            feature: trained.feature,
            classifier,
            features: trained.features,
          },
          training: {
            label: flags.label,
            data: flags.data,
            examples: examples.length,
            window: flags.window,
            docPart: flags.docPart,
            calibrationData: flags.calibrationData,
            calibrationDocPart: flags.calibrationDocPart,
            target: flags.target,
            preset: flags.preset,
            maxDrop: flags.maxDrop,
            seed: flags.seed,
            createdAt: new Date().toISOString(),
          },
          metrics: {
            ...trained.metrics,
            oracle: oracle && {
              firstMeanLayers: oracle.first,
              firstPruningRatio: (nLayer - oracle.first) / nLayer,
              stayMeanLayers: oracle.stay,
              stayPruningRatio: (nLayer - oracle.stay) / nLayer,
            },
            seconds: (performance.now() - t0) / 1000,
          },
        };
        saveExitFile(output, file);
        const summary = { output, classifier: trained.kind, threshold: trained.threshold, layerThresholds: trained.layerThresholds, ...file.metrics };
        if (flags.json) process.stdout.write(JSON.stringify(summary) + '\n');
        else {
          const c = trained.metrics.calibration;
          process.stdout.write(
            `wrote ${output}: ${trained.kind} on ${examples.length} examples (${trained.metrics.fitExamples} fit, ` +
              `${trained.metrics.calibrationExamples} calibration), ` +
              (trained.layerThresholds ? `per-layer thresholds ${trained.layerThresholds.map((t) => (Number.isFinite(t) ? t.toPrecision(4) : String(t))).join(', ')}\n` : `threshold ${trained.threshold}\n`) +
              `held-out: agreement ${(c.agreement * 100).toFixed(2)}% (95% lower bound ${(c.agreementLower * 100).toFixed(2)}% over positions` +
              (c.agreementLowerDocuments !== undefined ? `, ${(c.agreementLowerDocuments * 100).toFixed(2)}% over documents` : '') +
              `; calibrated against the bound over ${c.bound})` +
              (c.accuracyDrop !== undefined ? `, accuracy drop ${(c.accuracyDrop * 100).toFixed(2)} points (95% upper bound ${(c.accuracyDropUpper! * 100).toFixed(2)})` : '') +
              `, mean layers ${c.meanLayers.toFixed(3)} / ${nLayer}, ` +
              `pruning ${(c.pruningRatio * 100).toFixed(1)}%\n`,
          );
        }
      } finally {
        ctx.dispose();
        model.dispose();
      }
    });
}
