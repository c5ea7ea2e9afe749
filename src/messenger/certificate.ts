/**
 * The DTLS certificate our leg presents to Meta: ECDSA P-256, self-signed, as browsers use.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { CipherContext, HashAlgorithm, NamedCurveAlgorithm, RTCCertificate, SignatureAlgorithm } from 'werift';
import type { SignatureHash } from 'werift';
import type { SdpFingerprint } from './sdp.js';

export interface DtlsCertificate {
  certPem: string;
  /** Private key in the PEM form werift's DTLS stack reads. */
  keyPem: string;
  signatureHash: SignatureHash;
  /** sha-256 fingerprint for a=fingerprint. */
  fingerprint: SdpFingerprint;
}

export async function createDtlsCertificate(): Promise<DtlsCertificate> {
  const { certPem, keyPem, signatureHash } = await CipherContext.createSelfSignedCertificateWithKey(
    { signature: SignatureAlgorithm.ecdsa_3, hash: HashAlgorithm.sha256_4 },
    NamedCurveAlgorithm.secp256r1_23,
  );
  const certificate = new RTCCertificate(keyPem, certPem, signatureHash);
  const der = new X509Certificate(certPem).raw;
  const hex = createHash('sha256').update(der).digest('hex').toUpperCase();
  return {
    certPem: certificate.certPem,
    keyPem: certificate.privateKey,
    signatureHash,
    fingerprint: { algorithm: 'sha-256', value: hex.match(/.{2}/g)!.join(':') },
  };
}
