/**
 * `@hmm/driver-mlx5`: a reference simulated RDMA NIC modelled on mlx5 On-Demand Paging
 * (drivers/infiniband/hw/mlx5/odp.c, drivers/infiniband/core/umem_odp.c). See the package README.
 *
 * @packageDocumentation
 */
export {
  Mlx5Hca,
  MLX5_DEFAULT_MESSAGE_LATENCY_NS,
  MLX5_DEFAULT_MIN_RNR_TIMER_NS,
  MLX5_DEFAULT_MTU,
  MLX5_DEFAULT_WIRE_GBS,
  MLX5_UMR_PER_ENTRY_NS,
} from './hca.js';
export type { Mlx5HcaOptions, Mlx5HcaStats } from './hca.js';
export { MLX5_PF_EQ_ENTRIES, PageFaultEq, PfFlag, PfKind } from './eq.js';
export type { PageFaultEqe, PfKindId } from './eq.js';
export { Mlx5Pd } from './pd.js';
export { IB_ACCESS_ALL, IbAccess, Mlx5Mr, PfFlags, accessWritable } from './mr.js';
export type { MrKind, MrStats } from './mr.js';
export { PinnedMr } from './umem.js';
export { OdpDma, UmemOdp } from './umem-odp.js';
export type { OdpMapResult, UmemOdpOwner } from './umem-odp.js';
export { ImplicitOdpMr, MLX5_IMR_CHILD_BYTES, OdpMr } from './odp-mr.js';
export { PeerMr } from './peer-mr.js';
export { ADVISE_MR_FLAG_FLUSH, MLX5_MAX_PREFETCH_BYTES, adviseMr, handlePageFault } from './odp.js';
export type { AdviseMrAdvice, IbSge } from './odp.js';
export { Mlx5Cq, WcStatus } from './cq.js';
export type { IbWc, WcOpcode, WcStatusName } from './cq.js';
export { MLX5_MAX_LOCAL_FAULT_ROUNDS, Mlx5Qp, RNR_RETRY_INFINITE } from './qp.js';
export type { IbRecvWr, IbSendWr, IbWrOpcode, QpOptions, QpState, QpStats } from './qp.js';
export { RdmaRemote } from './rdma-remote.js';
export type { RdmaRemoteOptions } from './rdma-remote.js';
export {
  Mlx5PeerImporter,
  Mlx5TestDevice,
  Mlx5UserptrHandle,
  Mlx5UserptrTarget,
  mlx5Factory,
  mlx5Manifest,
} from './conformance.js';
export type { Mlx5UserptrKind } from './conformance.js';
export { gpuImportPattern, runGpuImportScenario } from './gpu-import.js';
export type { GpuImportMappingCounts, GpuImportOptions, GpuImportResult } from './gpu-import.js';
export {
  formatPinVsOdp,
  odpResidentBound,
  pinVsOdpLayout,
  runPinVsOdp,
  runPinVsOdpMode,
} from './pin-vs-odp.js';
export type { PinVsOdpMemory, PinVsOdpModeResult, PinVsOdpOptions, PinVsOdpResult } from './pin-vs-odp.js';
