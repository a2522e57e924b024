/** The dmirror example run through the conformance suite (the ported hmm-tests.c cases). */
import { defineConformanceSuite } from '@hmm/conformance/vitest';
import { dmirrorFactory, dmirrorManifest } from './factory.js';

defineConformanceSuite(dmirrorFactory, dmirrorManifest);
