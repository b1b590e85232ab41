@_exported import BatonTestSupport
