export { WeriftMessengerLeg } from './WeriftMessengerLeg.js';
export type { MessengerLegStats, MessengerLegTimings, WeriftMessengerLegOptions } from './WeriftMessengerLeg.js';
export { WeriftMessengerLegFactory } from './WeriftMessengerLegFactory.js';
export type { WeriftMessengerLegFactoryOptions } from './WeriftMessengerLegFactory.js';
export { createDtlsCertificate } from './certificate.js';
export type { DtlsCertificate } from './certificate.js';
