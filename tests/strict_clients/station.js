// A charging station made of the ocpp-rpc package in strict mode: every message it sends and
// every answer and call it receives is validated against the official OCPP JSON schemas
// (the package's own copy), so the bridge and this project's simulator cannot agree on a
// mistake. Driven by tests/bridge/test_bridge_strict_clients.py.
//
// Usage: node station.js ENDPOINT IDENTITY PASSWORD (ocpp2.0.1 | ocpp1.6)
// Prints one JSON line: {protocol, transactionId, answers, failures}; exits 1 on any failure
// (a schema violation in either direction, a CALLERROR, a timeout).
'use strict';

const { RPCClient, createRPCError } = require('ocpp-rpc');

const [endpoint, identity, password, protocol] = process.argv.slice(2);
const failures = [];
const answers = {};
const now = () => new Date().toISOString();

const client = new RPCClient({
    endpoint,
    identity,
    password,
    protocols: [protocol],
    strictMode: true,
    reconnect: false,
    callTimeoutMs: 10000,
});
client.on('strictValidationFailure', (event) => {
    failures.push({
        kind: 'schema',
        direction: event.outbound ? 'sent' : 'received',
        method: event.method,
        isCall: event.isCall,
        error: String(event.error && event.error.message),
        details: event.error && event.error.details,
    });
});
client.on('badMessage', (event) => {
    failures.push({ kind: 'badMessage', error: String(event.error), buffer: String(event.buffer) });
});
// Any call the bridge makes that this station has no handler for is a finding too.
client.handle(({ method, params }) => {
    failures.push({ kind: 'unexpected call', method, params });
    throw createRPCError('NotImplemented');
});

async function call(method, params) {
    const answer = await client.call(method, params);
    (answers[method] = answers[method] || []).push(answer);
    return answer;
}

function waitFor(what, check, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
        const started = Date.now();
        const timer = setInterval(() => {
            if (check()) {
                clearInterval(timer);
                resolve();
            } else if (Date.now() - started > timeoutMs) {
                clearInterval(timer);
                reject(new Error(`timed out waiting for ${what}`));
            }
        }, 20);
    });
}

// --- OCPP 2.0.1 --------------------------------------------------------------------------------
const DEVICE_MODEL = [
    [
        {
            component: { name: 'OCPPCommCtrlr' },
            variable: { name: 'HeartbeatInterval' },
            variableAttribute: [{ type: 'Actual', value: '300', mutability: 'ReadWrite' }],
            variableCharacteristics: { dataType: 'integer', supportsMonitoring: false, unit: 's' },
        },
        {
            component: { name: 'EVSE', evse: { id: 1 } },
            variable: { name: 'AvailabilityState' },
            variableAttribute: [{ type: 'Actual', value: 'Available', mutability: 'ReadOnly' }],
            variableCharacteristics: {
                dataType: 'OptionList',
                supportsMonitoring: true,
                valuesList: 'Available,Occupied,Reserved,Unavailable,Faulted',
            },
        },
    ],
    [
        {
            component: { name: 'Connector', evse: { id: 1, connectorId: 1 } },
            variable: { name: 'Problem' },
            variableAttribute: [{ type: 'Actual', value: 'false', mutability: 'ReadOnly' }],
            variableCharacteristics: { dataType: 'boolean', supportsMonitoring: true },
        },
    ],
];

function meterValue(wh, extra = {}) {
    return {
        timestamp: now(),
        sampledValue: [
            { value: wh, measurand: 'Energy.Active.Import.Register', unitOfMeasure: { unit: 'Wh' }, ...extra },
            { value: 7.2, measurand: 'Power.Active.Import', unitOfMeasure: { unit: 'kW' } },
        ],
    };
}

async function run201() {
    let accepted = false;
    let reportRequest = null;
    client.handle('GetBaseReport', ({ params }) => {
        reportRequest = params.requestId;
        return { status: 'Accepted' };
    });
    client.handle('TriggerMessage', ({ params }) => {
        return { status: params.requestedMessage === 'BootNotification' ? 'Accepted' : 'Rejected' };
    });
    const boot = () =>
        call('BootNotification', {
            reason: 'PowerUp',
            chargingStation: { model: 'Strict-201', vendorName: 'ocpp-rpc', firmwareVersion: '1.2.3', serialNumber: 'SN-STRICT' },
        }).then((answer) => {
            accepted = accepted || answer.status === 'Accepted';
            return answer;
        });
    // What the station does once its answer to a call of the bridge is sent (outbound: the
    // call was this station's own).
    client.on('callResult', async ({ method, outbound, params }) => {
        if (outbound) return;
        try {
            if (method === 'GetBaseReport') {
                for (let seqNo = 0; seqNo < DEVICE_MODEL.length; seqNo++) {
                    await call('NotifyReport', {
                        requestId: params.requestId,
                        generatedAt: now(),
                        seqNo,
                        tbc: seqNo < DEVICE_MODEL.length - 1,
                        reportData: DEVICE_MODEL[seqNo],
                    });
                }
            } else if (method === 'TriggerMessage' && params.requestedMessage === 'BootNotification') {
                await boot();
            }
        } catch (error) {
            failures.push({ kind: 'call failed', method, error: String(error) });
        }
    });

    const first = await boot();
    if (first.status !== 'Pending') failures.push({ kind: 'expected Pending', answer: first });
    await waitFor('BootNotification Accepted', () => accepted, 20000);
    if (reportRequest === null) failures.push({ kind: 'no GetBaseReport before acceptance' });

    await call('StatusNotification', { timestamp: now(), connectorStatus: 'Occupied', evseId: 1, connectorId: 1 });
    await call('Heartbeat', {});
    const transactionId = `strict-${identity}`;
    const event = (eventType, seqNo, triggerReason, extra = {}) => ({
        eventType,
        timestamp: now(),
        triggerReason,
        seqNo,
        transactionInfo: { transactionId, ...(extra.info || {}) },
        ...(extra.body || {}),
    });
    await call('TransactionEvent', event('Started', 0, 'CablePluggedIn', {
        info: { chargingState: 'EVConnected' },
        body: { evse: { id: 1, connectorId: 1 }, meterValue: [meterValue(1000, { context: 'Transaction.Begin' })] },
    }));
    await call('TransactionEvent', event('Updated', 1, 'Authorized', {
        info: { chargingState: 'Charging' },
        body: { idToken: { idToken: 'STRICT-TAG', type: 'ISO14443' } },
    }));
    await call('TransactionEvent', event('Updated', 2, 'MeterValuePeriodic', {
        info: { chargingState: 'Charging' },
        body: { meterValue: [meterValue(2500)] },
    }));
    await call('MeterValues', { evseId: 1, meterValue: [meterValue(2600)] });
    await call('NotifyEvent', {
        generatedAt: now(),
        seqNo: 0,
        tbc: false,
        eventData: [{
            eventId: 1,
            timestamp: now(),
            trigger: 'Alerting',
            actualValue: 'true',
            techCode: 'E-17',
            techInfo: 'contactor welded',
            eventNotificationType: 'HardWiredNotification',
            component: { name: 'Connector', evse: { id: 1, connectorId: 1 } },
            variable: { name: 'Problem' },
        }],
    });
    await call('TransactionEvent', event('Updated', 3, 'EVCommunicationLost', {
        info: { chargingState: 'Idle' },
    }));
    await call('TransactionEvent', event('Ended', 4, 'EVDeparted', {
        info: { stoppedReason: 'EVDisconnected' },
        body: { meterValue: [meterValue(4000, { context: 'Transaction.End' })] },
    }));
    await call('Heartbeat', {});
    return transactionId;
}

// --- OCPP 1.6 ----------------------------------------------------------------------------------
async function run16() {
    client.handle('GetConfiguration', () => ({
        configurationKey: [{ key: 'HeartbeatInterval', readonly: false, value: '300' }],
    }));
    client.handle('TriggerMessage', () => ({ status: 'Rejected' }));
    const boot = await call('BootNotification', {
        chargePointVendor: 'ocpp-rpc', chargePointModel: 'Strict-16', firmwareVersion: '1.2.3',
    });
    if (boot.status !== 'Accepted') failures.push({ kind: 'expected Accepted', answer: boot });
    await call('StatusNotification', { connectorId: 1, errorCode: 'NoError', status: 'Preparing', timestamp: now() });
    await call('Heartbeat', {});
    await call('Authorize', { idTag: 'STRICT-16' });
    const started = await call('StartTransaction', {
        connectorId: 1, idTag: 'STRICT-16', meterStart: 1000, timestamp: now(),
    });
    const transactionId = started.transactionId;
    await call('MeterValues', {
        connectorId: 1,
        transactionId,
        meterValue: [{ timestamp: now(), sampledValue: [{ value: '2500', measurand: 'Energy.Active.Import.Register', unit: 'Wh' }] }],
    });
    await call('StopTransaction', {
        transactionId, meterStop: 4000, timestamp: now(), reason: 'EVDisconnected', idTag: 'STRICT-16',
    });
    await call('StatusNotification', { connectorId: 1, errorCode: 'NoError', status: 'Available', timestamp: now() });
    return transactionId;
}

async function main() {
    let transactionId = null;
    try {
        await client.connect();
        transactionId = protocol === 'ocpp1.6' ? await run16() : await run201();
        // Calls the bridge may still make after the last answer (and their validation).
        await new Promise((resolve) => setTimeout(resolve, 300));
    } catch (error) {
        failures.push({ kind: 'error', error: String(error && error.stack || error), details: error && error.details });
    }
    try {
        await client.close({ code: 1000 });
    } catch (error) {
        failures.push({ kind: 'close', error: String(error) });
    }
    process.stdout.write(JSON.stringify({ protocol: client.protocol || protocol, transactionId, answers, failures }) + '\n');
    process.exit(failures.length ? 1 : 0);
}

main();
