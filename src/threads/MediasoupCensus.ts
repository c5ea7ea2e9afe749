/**
 * Counts the live mediasoup objects (routers, transports, producers, consumers) of the workers started after it,
 * from mediasoup's observer events: what a media thread reports when asked what it holds (monitoring, leak tests).
 */
import { loadMediasoup } from '../media/WorkerPool.js';

interface Observed {
  constructor: { name: string };
  observer: { on(event: string, fn: (child: Observed) => void): void; once(event: string, fn: () => void): void };
}

export class MediasoupCensus {
  readonly #live = new Set<Observed>();

  /** Start counting (before the first worker starts). */
  static async start(workerBin?: string): Promise<MediasoupCensus> {
    const census = new MediasoupCensus();
    const mediasoup = await loadMediasoup(workerBin);
    (mediasoup.observer as unknown as Observed['observer']).on('newworker', (worker) => {
      worker.observer.on('newrouter', (router) => census.#watch(router, ['newtransport', 'newrtpobserver']));
    });
    return census;
  }

  /** Live objects by class (Router, PlainTransport, DirectTransport, Producer, Consumer ...). */
  kinds(): Record<string, number> {
    const kinds: Record<string, number> = {};
    for (const obj of this.#live) kinds[obj.constructor.name] = (kinds[obj.constructor.name] ?? 0) + 1;
    return kinds;
  }

  get size(): number {
    return this.#live.size;
  }

  #watch(obj: Observed, children: string[]): void {
    this.#live.add(obj);
    obj.observer.once('close', () => this.#live.delete(obj));
    for (const event of children) {
      const grandChildren = event === 'newtransport' ? ['newproducer', 'newconsumer', 'newdataproducer', 'newdataconsumer'] : [];
      obj.observer.on(event, (child) => this.#watch(child, grandChildren));
    }
  }
}
