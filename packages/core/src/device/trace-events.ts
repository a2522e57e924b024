/**
 * Trace events of the simulated devices, added to the sim layer's {@link TraceEventMap} (hardware
 * counterpart: a GPU's channel and MMU-fault tracepoints, e.g. nouveau's `nvkm_fault`, UVM's
 * fault-buffer events; kernel: `dma_fence_signaled`).
 *
 * @module
 */
import type { DeviceCommandOp } from './command-queue.js';
import type { CopyDirection } from './copy-engine.js';
import type { DeviceAccessKind } from './device.js';

declare module '../sim/trace.js' {
  interface TraceEventMap {
    /**
     * A device command completed and its fence signalled. `entries`: entries written (map) or
     * cleared (unmap, unmap-all), 0 for nop. `asid` is null for nop; `startVpn`/`endVpn` are set for
     * unmap only. `began` is when the command processor started executing it (the command occupied
     * the device from `began` to `ts`); `minVpn`/`maxVpn` are the lowest and highest vpn a map
     * wrote or an unmap covered (null for nop, unmap-all and an empty map). Kernel:
     * `dma_fence_signaled`.
     */
    'device.cmd': {
      device: number;
      name: string;
      seqno: number;
      op: DeviceCommandOp;
      asid: number | null;
      entries: number;
      startVpn: number | null;
      endVpn: number | null;
      began: number;
      minVpn: number | null;
      maxVpn: number | null;
    };
    /**
     * A device access found no entry with the needed permission. `address` is page aligned;
     * `attempt` counts faults on this page within one access, from 1; `handled` is false when no
     * fault handler was registered. Counterpart: a replayable GPU fault-buffer entry.
     */
    'device.fault': {
      device: number;
      name: string;
      asid: number;
      address: number;
      access: DeviceAccessKind;
      attempt: number;
      handled: boolean;
    };
    /**
     * A copy engine started a transfer of `pages` pages in direction `dir`, taking `ns` simulated ns
     * (the transfer occupies the engine from `ts` to `ts + ns`); `copied` pages will arrive (fewer
     * than `pages` when a failure was injected). `engine` is the engine's name, `device` the id of
     * the device it belongs to when it was given one, else null. Counterpart: a DMA engine's job.
     */
    'device.copy': {
      engine: string;
      device: number | null;
      dir: CopyDirection;
      pages: number;
      copied: number;
      ns: number;
    };
  }
}

export {};
