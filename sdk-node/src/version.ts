/** Version of this SDK (sent in the worker's hello). Kept equal to package.json's version. */
export const SDK_VERSION = "0.1.0";
