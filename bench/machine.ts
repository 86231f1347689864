/**
 * A description of the machine a benchmark ran on, shared by every benchmark in bench/:
 * CPU model and cores from /proc/cpuinfo (os.cpus() elsewhere), the CPU features and kernel variant
 * adainfer's native addon reports, memory, load average, Node and OS versions.
 *
 * Nothing here needs the native addon: when it cannot be loaded, the features come from /proc/cpuinfo's
 * flags instead and `addonError` says why.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

export interface MachineInfo {
  cpuModel: string;
  /** Logical CPUs the OS shows (os.cpus().length). */
  logicalCpus: number;
  /** Physical cores: adainfer's systemInfo() when available, else counted from /proc/cpuinfo. */
  physicalCores: number | undefined;
  /** CPUs this process may run on (sched affinity / cgroup), when Node can tell (availableParallelism). */
  availableParallelism: number;
  /** MHz of the first CPU in /proc/cpuinfo (often a nominal value inside a VM). */
  cpuMHz: number | undefined;
  /** adainfer's systemInfo().cpuFeatures, or SIMD-relevant /proc/cpuinfo flags when the addon is missing. */
  cpuFeatures: string;
  /** Where cpuFeatures came from. */
  featuresSource: 'adainfer' | '/proc/cpuinfo';
  /** adainfer's chosen kernel variant and the ones this CPU can run. */
  adainferKernels: string | undefined;
  adainferKernelsAvailable: string[] | undefined;
  addonError: string | undefined;
  hypervisor: boolean;
  memTotalGiB: number;
  memFreeGiB: number;
  /** 1-minute load average at the time of the description (a hint of how noisy the machine is). */
  loadAvg1: number;
  node: string;
  v8: string;
  os: string;
  /** ISO time of the description. */
  date: string;
}

interface CpuInfoSummary {
  model: string | undefined;
  mhz: number | undefined;
  flags: string[];
  physicalCores: number | undefined;
}

function readCpuInfo(): CpuInfoSummary {
  let text = '';
  try {
    text = fs.readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return { model: undefined, mhz: undefined, flags: [], physicalCores: undefined };
  }
  const field = (block: string, name: string): string | undefined => {
    const m = new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(block);
    return m ? m[1].trim() : undefined;
  };
  const blocks = text.split(/\n\s*\n/).filter((b) => /^processor\s*:/m.test(b));
  const first = blocks[0] ?? text;
  const cores = new Set<string>();
  for (const b of blocks) {
    const phys = field(b, 'physical id');
    const core = field(b, 'core id');
    if (phys !== undefined && core !== undefined) cores.add(`${phys}:${core}`);
  }
  const mhz = Number(field(first, 'cpu MHz'));
  return {
    model: field(first, 'model name') ?? field(first, 'Model') ?? field(first, 'Hardware'),
    mhz: Number.isFinite(mhz) && mhz > 0 ? mhz : undefined,
    flags: (field(first, 'flags') ?? field(first, 'Features') ?? '').split(/\s+/).filter(Boolean),
    physicalCores: cores.size > 0 ? cores.size : undefined,
  };
}

/** SIMD/matrix flags worth printing when the addon cannot tell us what it uses. */
const INTERESTING_FLAGS = /^(sse4_2|avx|avx2|fma|f16c|avx512(f|bw|vl|dq|cd|_bf16|_vnni|_fp16|vbmi|ifma)|avx_vnni|amx_\w+|neon|asimd\w*|sve\w*)$/;

type AdainferSystemInfo = { cpuFeatures: string; physicalCores: number; kernels: string; available: string[] };

/** adainfer's native systemInfo(), loaded lazily so that a missing addon does not break a benchmark. */
export function adainferSystemInfo(): { info?: AdainferSystemInfo; error?: string } {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { native } = require('../lib/bindings/native') as typeof import('../lib/bindings/native');
    return { info: native().systemInfo() };
  } catch (err) {
    return { error: (err as Error).message.split('\n')[0] };
  }
}

export function describeMachine(): MachineInfo {
  const cpu = readCpuInfo();
  const cpus = os.cpus();
  const sys = adainferSystemInfo();
  const flags = cpu.flags.filter((f) => INTERESTING_FLAGS.test(f));
  return {
    cpuModel: cpu.model ?? cpus[0]?.model ?? 'unknown',
    logicalCpus: cpus.length,
    physicalCores: sys.info?.physicalCores ?? cpu.physicalCores,
    availableParallelism: typeof os.availableParallelism === 'function' ? os.availableParallelism() : cpus.length,
    cpuMHz: cpu.mhz ?? (cpus[0]?.speed || undefined),
    cpuFeatures: sys.info?.cpuFeatures ?? flags.join(' '),
    featuresSource: sys.info ? 'adainfer' : '/proc/cpuinfo',
    adainferKernels: sys.info?.kernels,
    adainferKernelsAvailable: sys.info?.available,
    addonError: sys.error,
    hypervisor: cpu.flags.includes('hypervisor'),
    memTotalGiB: os.totalmem() / 2 ** 30,
    memFreeGiB: os.freemem() / 2 ** 30,
    loadAvg1: os.loadavg()[0],
    node: process.version,
    v8: process.versions.v8,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    date: new Date().toISOString(),
  };
}

/** Human-readable lines (no trailing newline), e.g. for the head of a benchmark report. */
export function formatMachine(m: MachineInfo): string[] {
  const cores =
    `${m.physicalCores ?? '?'} physical core(s), ${m.logicalCpus} logical CPU(s)` +
    (m.availableParallelism !== m.logicalCpus ? `, ${m.availableParallelism} usable by this process` : '');
  const lines = [
    `cpu       ${m.cpuModel}${m.cpuMHz ? ` @ ${Math.round(m.cpuMHz)} MHz` : ''}${m.hypervisor ? ' (virtual machine)' : ''}`,
    `cores     ${cores}`,
    `features  ${m.cpuFeatures || '(none reported)'}  [${m.featuresSource}]`,
  ];
  if (m.adainferKernels) lines.push(`kernels   adainfer uses '${m.adainferKernels}' (available: ${m.adainferKernelsAvailable?.join(', ')})`);
  else lines.push(`kernels   adainfer native addon not loaded: ${m.addonError}`);
  lines.push(
    `memory    ${m.memTotalGiB.toFixed(1)} GiB total, ${m.memFreeGiB.toFixed(1)} GiB free; load average (1 min) ${m.loadAvg1.toFixed(2)}`,
    `software  node ${m.node} (V8 ${m.v8}), ${m.os}`,
    `date      ${m.date}`,
  );
  return lines;
}

/** The repository root (the directory holding adainfer's package.json), from bench/ or dist/bench/. */
export function repoRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg)) {
      try {
        if ((JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string }).name === 'adainfer') return dir;
      } catch {
        // not ours; keep going up
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`cannot find adainfer's package.json above ${__dirname}`);
    dir = parent;
  }
}

/** The models the early-exit evidence scripts measure by default: both bundled models and ../shared's stories260K. */
export function exitEvidenceModels(): string[] {
  const root = repoRoot();
  return [
    path.join(root, 'models', 'adainfer-tinystories-10L-ee.f16.gguf'),
    path.join(root, 'models', 'adainfer-tinystories-10L.f16.gguf'),
    path.join(root, '..', 'shared', 'models', 'stories260K.gguf'),
  ];
}
