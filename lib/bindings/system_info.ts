/** What this machine offers the runtime: CPU cores and kernel variants, and the CUDA probe (see README, GPU). */
import { native, SystemInfo } from './native';

export function systemInfo(): SystemInfo {
  return native().systemInfo();
}
